"""The web console: its static routes on the gateway, and the console in a real browser.

The browser test starts the mesh (`mesh up` on free ports, the test session's PostgreSQL and
Redis, tests/browser/policies.toml: the e2e limits plus 3 reservations a minute per user),
seeds the catalog and runs `console.test.mjs` in Node: playwright-core driving Debian's
Chromium headless through sign-up, search, reservations, two people chatting (one going
offline and coming back) and the API docs. Its screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.console import CONSOLE_CSP, DOCS_CSP, ConsoleFiles, add_console_routes, resolve
from mesh.harness import BackingUrls
from mesh.problem import problem_middleware
from mesh.request_id import request_id_middleware
from tests.browser.tools import ROOT, ensure_chromium, ensure_npm_packages, node
from tests.e2e.mesh_process import MESH, MeshProcess, mesh_env, start_mesh

ARTIFACTS: Final = ROOT / "test-artifacts" / "browser"
SCRIPT: Final = Path(__file__).with_name("console.test.mjs")
POLICIES: Final = Path(__file__).with_name("policies.toml")
RESERVE_LIMIT: Final = 3  # policies.toml's "reserve" group
BROWSER_SECONDS: Final = 180


# The routes on their own, over a folder laid out like web/.


@pytest.fixture
def web_root(tmp_path: Path) -> Path:
    root = tmp_path / "web"
    (root / "assets" / "js").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "index.html").write_text("<!doctype html><title>console</title>")
    (root / "assets" / "js" / "main.js").write_text("export {};")
    (root / "assets" / "app.css").write_text("body {}")
    (root / "assets" / ".secret.js").write_text("hidden")
    (root / "assets" / "notes.py").write_text("not a web file")
    (root / "docs" / "index.html").write_text("<!doctype html><title>docs</title>")
    (root / "docs" / "docs.js").write_text("SwaggerUIBundle({});")
    (tmp_path / "outside.js").write_text("outside the root")
    return root


@contextlib.asynccontextmanager
async def console_client(root: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(middlewares=[request_id_middleware, problem_middleware])
    add_console_routes(app.router, ConsoleFiles(root))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


def install_renderer(root: Path) -> None:
    renderer = root / "node_modules" / "swagger-ui-dist"
    renderer.mkdir(parents=True)
    (renderer / "swagger-ui-bundle.js").write_text("var SwaggerUIBundle;")
    (renderer / "swagger-ui.css").write_text(".swagger-ui {}")


async def test_console_files_have_their_types_caching_and_csp(web_root: Path) -> None:
    async with console_client(web_root) as client:
        page = await client.get("/")
        assert page.status == 200
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert page.headers["Cache-Control"] == "no-cache"
        assert page.headers["Content-Security-Policy"] == CONSOLE_CSP
        assert "connect-src 'self' ws: wss:" in CONSOLE_CSP
        assert "'unsafe-inline'" not in CONSOLE_CSP
        etag = page.headers["ETag"]
        again = await client.get("/", headers={"If-None-Match": etag})
        assert again.status == 304
        script = await client.get("/assets/js/main.js")
        assert script.status == 200
        assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert "Content-Security-Policy" not in script.headers  # a page's header, not a file's
        style = await client.head("/assets/app.css")
        assert (style.status, style.headers["Content-Type"]) == (200, "text/css; charset=utf-8")


@pytest.mark.parametrize(
    "path",
    [
        "/assets/js/missing.js",
        "/assets/.secret.js",  # hidden files
        "/assets/notes.py",  # not a web file type
        "/assets/%2e%2e/index.html",  # out of assets/ (it exists in the root above)
        "/assets/..%2f..%2foutside.js",
        "/assets/js/%2e%2e/%2e%2e/%2e%2e/outside.js",
        "/assets/%2fetc%2fpasswd",
    ],
)
async def test_only_files_inside_the_root_are_served(web_root: Path, path: str) -> None:
    async with console_client(web_root) as client:
        response = await client.get(path)
        assert response.status == 404
        assert response.headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(
    "relative",
    ["", "../index.html", "js/../../outside.js", "/etc/hostname.js", ".secret.js", "notes.py",
     "js", "js/./main.js", "..\\index.html", "js//main.js"],
)  # fmt: skip
def test_resolve_refuses_what_may_not_be_served(web_root: Path, relative: str) -> None:
    assert resolve(web_root / "assets", relative) is None


def test_resolve_refuses_a_link_out_of_its_root(web_root: Path) -> None:
    (web_root / "assets" / "link.js").symlink_to(web_root.parent / "outside.js")
    assert resolve(web_root / "assets", "link.js") is None
    assert resolve(web_root / "assets", "js/main.js") == web_root / "assets" / "js" / "main.js"


async def test_no_console_is_a_404_problem(tmp_path: Path) -> None:
    async with console_client(tmp_path / "absent") as client:
        response = await client.get("/")
        assert response.status == 404
        assert "not installed" in (await response.json(content_type=None))["detail"]


async def test_docs_answer_503_until_the_renderer_is_installed(web_root: Path) -> None:
    async with console_client(web_root) as client:
        for path in ("/docs", "/docs/", "/docs/docs.js", "/docs/vendor/swagger-ui-bundle.js"):
            response = await client.get(path)
            assert response.status == 503, path
            problem = await response.json(content_type=None)
            assert "run `make`" in problem["detail"]
        install_renderer(web_root)
        docs = await client.get("/docs")
        assert docs.status == 200
        assert docs.headers["Content-Security-Policy"] == DOCS_CSP
        assert "script-src 'self';" in DOCS_CSP  # no inline script, no eval
        vendor = await client.get("/docs/vendor/swagger-ui-bundle.js")
        assert vendor.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert (await client.get("/docs/docs.js")).status == 200
        assert (await client.get("/docs/vendor/..%2f..%2findex.html")).status == 404


# The console in the real gateway and in a browser.


@pytest.fixture(scope="module")
def console_mesh(
    backing: BackingUrls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MeshProcess]:
    ensure_npm_packages()  # the docs renderer is served by the gateway from web/node_modules
    data_dir = tmp_path_factory.mktemp("console-mesh")
    env, ports, ops_ports, namespace = mesh_env(
        {
            "MESH_POSTGRES_DSN": backing.postgres_dsn,
            "MESH_REDIS_URL": backing.redis_url,
            "MESH_MONGO_URL": backing.mongo_url,
        },
        data_dir,
    )
    gateway = ports["gateway"]
    env["MESH_GATEWAY_POLICIES"] = str(POLICIES)
    # The page's origin must be on the allow-list to open the chat WebSocket.
    env["MESH_ALLOWED_ORIGINS"] = f"http://127.0.0.1:{gateway},http://localhost:{gateway}"
    running = start_mesh(env, ports, ops_ports, namespace, data_dir / "mesh-up.log")
    try:
        running.wait_for("the mesh is ready", timeout=120)
        seeded = subprocess.run(
            [MESH, "seed", "--count", "120"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()


@pytest.mark.e2e
async def test_the_gateway_serves_the_console_with_its_headers(console_mesh: MeshProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{console_mesh.gateway}/") as page:
            assert page.status == 200
            assert page.headers["Content-Security-Policy"] == CONSOLE_CSP
            assert page.headers["X-Frame-Options"] == "DENY"
            assert page.headers["X-Content-Type-Options"] == "nosniff"
            assert page.headers["Referrer-Policy"] == "no-referrer"
            assert page.headers["Cache-Control"] == "no-cache"
            assert '<script type="module" src="/assets/js/main.js">' in await page.text()
        async with http.get(f"{console_mesh.gateway}/docs/vendor/swagger-ui-bundle.js") as bundle:
            assert bundle.status == 200
            assert bundle.headers["Content-Type"] == "text/javascript; charset=utf-8"
        async with http.post(f"{console_mesh.gateway}/") as wrong:
            assert wrong.status == 405
            assert wrong.headers["Allow"] == "GET,HEAD"
        async with http.get(f"{console_mesh.gateway}/openapi.json") as document:
            paths = (await document.json())["paths"]
        assert not [p for p in paths if p == "/" or p.startswith(("/assets", "/docs"))]
        assert "/api/v1/products" in paths


@pytest.mark.e2e
@pytest.mark.timeout(BROWSER_SECONDS + 420)  # the first run may install Chromium first
def test_the_console_in_a_browser(console_mesh: MeshProcess) -> None:
    chromium = ensure_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    log_path = ARTIFACTS / "console.test.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        result = subprocess.run(
            [node(), str(SCRIPT)],
            cwd=ROOT,
            env={
                **console_mesh.env,
                "MESH_CONSOLE_URL": console_mesh.gateway,
                "CHROMIUM": str(chromium),
                "ARTIFACTS": str(ARTIFACTS),
                "RESERVE_LIMIT": str(RESERVE_LIMIT),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=BROWSER_SECONDS,
            check=False,
        )
    output = log_path.read_text()
    print(output)  # shown by pytest -rA / on failure: each step and its time
    assert result.returncode == 0, (
        f"the browser scenario failed after {time.monotonic() - started:.1f} s "
        f"(screenshots in {ARTIFACTS}):\n{output[-6000:]}"
    )
    shots = sorted(p.name for p in ARTIFACTS.glob("*.png"))
    assert len(shots) >= 10, shots
