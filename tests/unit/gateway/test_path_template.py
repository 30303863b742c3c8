"""Path templates: the google.api.http grammar, custom verbs, and aiohttp's router agreeing."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.path_template import TemplateError, parse_template


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/api/v1/products/{id}", "/api/v1/products/p1", {"id": "p1"}),
        ("/api/v1/products/{id}", "/api/v1/products/a%20b", {"id": "a b"}),
        ("/api/v1/products/{id}", "/api/v1/products/p1:reserve", None),
        ("/api/v1/products/{id}", "/api/v1/products/", None),
        ("/api/v1/products/{id}", "/api/v1/products/a/b", None),
        ("/api/v1/products/{id}:reserve", "/api/v1/products/p1:reserve", {"id": "p1"}),
        ("/api/v1/products/{id}:reserve", "/api/v1/products/p1", None),
        ("/api/v1/products/{id}:reserve", "/api/v1/products/p1:cancel", None),
        ("/api/v1/analytics/events:batch", "/api/v1/analytics/events:batch", {}),
        ("/api/v1/analytics/events:batch", "/api/v1/analytics/events", None),
        ("/v1/{name=shelves/*}", "/v1/shelves/s1", {"name": "shelves/s1"}),
        ("/v1/{name=shelves/*}", "/v1/shelves/s1/x", None),
        ("/v1/{name=shelves/*}", "/v1/racks/s1", None),
        (
            "/v1/{book.name=shelves/*/books/*}",
            "/v1/shelves/s1/books/b2",
            {"book.name": "shelves/s1/books/b2"},
        ),
        ("/v1/{name=files/**}", "/v1/files/a/b/c", {"name": "files/a/b/c"}),
        ("/v1/{name=files/**}:download", "/v1/files/a/b:download", {"name": "files/a/b"}),
        ("/v1/*/items/{id}", "/v1/anything/items/7", {"id": "7"}),
        ("/v1/{a}/{b}:go", "/v1/x/y:go", {"a": "x", "b": "y"}),
    ],
)
def test_match(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert parse_template(template).match(path) == expected


def test_compiled_forms() -> None:
    template = parse_template("/v1/{book.name=shelves/*/books/*}:publish")
    assert template.verb == "publish"
    assert template.openapi_path == "/v1/{book.name}:publish"
    assert template.aiohttp_path == "/v1/{book__name:shelves/[^/]+/books/[^/:]+}:publish"
    assert [(v.field_path, v.group) for v in template.variables] == [("book.name", "book__name")]
    assert parse_template("/a/b").variables == ()
    assert parse_template("/a/b").verb is None


@pytest.mark.parametrize(
    "template",
    [
        "v1/x",
        "/v1/{id",
        "/v1/{id}/{id}",
        "/v1/**/x",
        "/v1//x",
        "/v1/{a=b/{c}}",
        "/v1/{1a}",
        "/v1/x:",
        "/v1/a*b",
        "/v1/{a=}",
    ],
)
def test_malformed_templates_are_rejected(template: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(template)


ROUTES = [
    ("GET", "/v1/books/{id}"),
    ("POST", "/v1/books/{id}:reserve"),
    ("POST", "/v1/books:archive"),
    ("GET", "/v1/{name=shelves/*}"),
    ("GET", "/v1/{parent=shelves/*}/books"),
]


async def _resolve(method: str, path: str) -> tuple[str, dict[str, str]]:
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    labels: dict[object, str] = {}
    for verb, template in ROUTES:
        resource = app.router.add_resource(parse_template(template).aiohttp_path)
        labels[resource.add_route(verb, handler)] = f"{verb} {template}"
    request = make_mocked_request(method, path, app=app)
    match = await app.router.resolve(request)
    if match.http_exception is not None:
        allowed = match.http_exception.headers.get("Allow", "")
        return f"{match.http_exception.status} {allowed}".strip(), {}
    return labels[match.route], dict(match)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v1/books/b1", ("GET /v1/books/{id}", {"id": "b1"})),
        ("POST", "/v1/books/b1:reserve", ("POST /v1/books/{id}:reserve", {"id": "b1"})),
        ("GET", "/v1/books/b1:reserve", ("405 POST", {})),
        ("POST", "/v1/books:archive", ("POST /v1/books:archive", {})),
        ("GET", "/v1/shelves/s1", ("GET /v1/{name=shelves/*}", {"name": "shelves/s1"})),
        (
            "GET",
            "/v1/shelves/s1/books",
            ("GET /v1/{parent=shelves/*}/books", {"parent": "shelves/s1"}),
        ),
        ("DELETE", "/v1/books/b1", ("405 GET", {})),
        ("GET", "/v1/nothing/here/at/all", ("404", {})),
    ],
)
async def test_aiohttp_router_resolves_compiled_templates(
    method: str, path: str, expected: tuple[str, dict[str, str]]
) -> None:
    assert await _resolve(method, path) == expected
