"""The web console at ``/`` and the API docs at ``/docs``: static files from ``web/``.

The console is a small app of hand-written ES modules (no build step): ``web/index.html``
at ``/`` and everything under ``web/assets/`` at ``/assets/...``. The API docs are Swagger
UI rendering ``/openapi.json``: ``web/docs/index.html`` at ``/docs`` (and ``/docs/``), its
start-up script ``web/docs/docs.js`` at ``/docs/docs.js``, and the renderer itself, the
npm package ``swagger-ui-dist`` that ``make`` installs into ``web/node_modules`` (``npm ci
--prefix web``), at ``/docs/vendor/...``. Until it is installed, every ``/docs`` path
answers a 503 problem saying so. Nothing is fetched from a CDN.

- **Routes.** Explicit ones, registered after the API's: no catch-all, so an unknown API
  path is still the router's 404 problem and a wrong method the 405 one, and the OpenAPI
  document (built from the protos' routes) never lists these.
- **Files.** Only regular files inside their root (after resolving links), with a known
  extension, whose path has no empty, ``.``/``..`` or hidden segment; anything else is a
  404 problem, and so is ``/`` where ``web/`` is not deployed (the image carries no
  console). aiohttp's `web.FileResponse` sends them (``sendfile``, ``Last-Modified``, an
  ``ETag``, ``304`` to ``If-None-Match`` / ``If-Modified-Since``, ranges).
- **Content types** come from `CONTENT_TYPES`, not the platform's MIME database: a module
  script must be served as JavaScript (``nosniff`` is on for every response), whatever
  ``/etc/mime.types`` says.
- **Caching.** The files keep their names from one version to the next (no build step, so
  no content hashes in the names), so every one is ``Cache-Control: no-cache``: a browser
  may keep it but revalidates it each time, which costs a ``304`` and never serves a stale
  module next to a fresh one.
- **Content-Security-Policy.** The console's pages may load and connect to their own origin
  only (plus ``ws:``/``wss:`` for the chat socket: CSP level 3 browsers match ``'self'`` to
  the same host over WebSocket, older ones need the schemes), with no inline script or style,
  no plugins, no ``<base>``, and no framing (``frame-ancestors 'none'``, next to the
  gateway's ``X-Frame-Options: DENY``). Swagger UI sets ``style`` attributes and uses
  ``data:`` images, so the docs page also allows inline styles and ``data:`` images
  (scripts stay same-origin files: no inline script, no ``eval``).

The gateway's response hooks add the other headers (``nosniff``, ``Referrer-Policy``,
``X-Frame-Options``, CORS, the request id) as on every response.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from aiohttp import hdrs, web

from mesh.problem import ProblemError

WEB_ROOT: Final = Path(__file__).resolve().parent.parent / "web"
RENDERER_PACKAGE: Final = "swagger-ui-dist"
# The renderer's files the docs page loads; all must be there for /docs to answer.
RENDERER_FILES: Final = ("swagger-ui-bundle.js", "swagger-ui.css")

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
CACHE_CONTROL: Final = "no-cache"

_COMMON_CSP: Final = (
    "default-src 'self'",
    "script-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)
CONSOLE_CSP: Final = "; ".join(
    (*_COMMON_CSP, "style-src 'self'", "img-src 'self'", "connect-src 'self' ws: wss:")
)
DOCS_CSP: Final = "; ".join(
    (*_COMMON_CSP, "style-src 'self' 'unsafe-inline'", "img-src 'self' data:", "connect-src 'self'")
)


@dataclass(frozen=True, slots=True)
class ConsoleFiles:
    """Where the console's files are: `root` is the ``web/`` folder."""

    root: Path = WEB_ROOT

    @property
    def assets(self) -> Path:
        return self.root / "assets"

    @property
    def docs(self) -> Path:
        return self.root / "docs"

    @property
    def renderer(self) -> Path:
        return self.root / "node_modules" / RENDERER_PACKAGE

    def renderer_installed(self) -> bool:
        return all((self.renderer / name).is_file() for name in RENDERER_FILES)


def resolve(root: Path, relative: str) -> Path | None:
    """The file `relative` names under `root`, or None when it may not be served."""
    parts = relative.split("/")
    if any(not p or p.startswith(".") or "\\" in p for p in parts):
        return None  # empty, absolute, `//`, `.`, `..`, hidden, or a Windows separator
    if PurePosixPath(relative).suffix.lower() not in CONTENT_TYPES:
        return None
    base = root.resolve()
    try:
        path = base.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


def file_response(path: Path | None, csp: str | None = None) -> web.FileResponse:
    if path is None:
        raise ProblemError(404, "No such file.")
    headers: dict[str, str] = {
        hdrs.CONTENT_TYPE: CONTENT_TYPES[path.suffix.lower()],
        hdrs.CACHE_CONTROL: CACHE_CONTROL,
    }
    if csp is not None:
        headers["Content-Security-Policy"] = csp
    return web.FileResponse(path, headers=headers)


def _renderer_missing() -> ProblemError:
    return ProblemError(
        503,
        f"The API docs renderer ({RENDERER_PACKAGE}) is not installed: run `make` "
        "(or `npm ci --prefix web`) and reload. The OpenAPI document itself is at "
        "/openapi.json.",
        title="API docs not installed",
    )


class Console:
    """The handlers, bound to one `ConsoleFiles`."""

    def __init__(self, files: ConsoleFiles) -> None:
        self.files = files

    async def index(self, request: web.Request) -> web.FileResponse:
        page = resolve(self.files.root, "index.html")
        if page is None:  # e.g. an image built without web/
            raise ProblemError(
                404,
                "The web console is not installed here; the API is documented at /openapi.json.",
            )
        return file_response(page, CONSOLE_CSP)

    async def asset(self, request: web.Request) -> web.FileResponse:
        return file_response(resolve(self.files.assets, request.match_info["path"]))

    async def docs_index(self, request: web.Request) -> web.FileResponse:
        if not self.files.renderer_installed():
            raise _renderer_missing()
        return file_response(resolve(self.files.docs, "index.html"), DOCS_CSP)

    async def docs_file(self, request: web.Request) -> web.FileResponse:
        if not self.files.renderer_installed():
            raise _renderer_missing()
        name = request.match_info["name"]
        if name == "index.html":
            return file_response(resolve(self.files.docs, name), DOCS_CSP)
        return file_response(resolve(self.files.docs, name))

    async def docs_vendor(self, request: web.Request) -> web.FileResponse:
        if not self.files.renderer_installed():
            raise _renderer_missing()
        return file_response(resolve(self.files.renderer, request.match_info["path"]))


def add_console_routes(router: web.UrlDispatcher, files: ConsoleFiles | None = None) -> None:
    """``GET`` (and ``HEAD``) routes for the console and the docs; see the module docstring."""
    console = Console(files or ConsoleFiles())
    router.add_get("/", console.index)
    router.add_get("/assets/{path:.+}", console.asset)
    router.add_get("/docs", console.docs_index)
    router.add_get("/docs/", console.docs_index)
    router.add_get("/docs/vendor/{path:.+}", console.docs_vendor)
    router.add_get("/docs/{name:[^/]+}", console.docs_file)
