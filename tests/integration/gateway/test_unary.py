"""HTTP/JSON -> gRPC -> JSON through the gateway, against real grpc.aio servers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.integration.gateway.conftest import FakeUpstreams

Client = TestClient[web.Request, web.Application]
PROBLEM = "application/problem+json"


async def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    body: dict[str, Any] = orjson.loads(await response.read())
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"]
    assert body["instance"] == response.url.path
    assert body["requestId"] == response.headers["X-Request-ID"]
    return body


async def test_get_product_is_transcoded(gateway: Client) -> None:
    response = await gateway.get("/api/v1/products/p1")
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert (body["id"], body["name"]) == ("p1", "Widget")
    assert body["description"] == ""  # zero values are printed
    assert body["attributes"] == {"color": "red"}
    assert body["createdAt"] == "2023-11-14T22:13:20Z"


async def test_json_mapping_of_the_response(gateway: Client) -> None:
    response = await gateway.get("/v1/books/b1")
    assert response.status == 200
    body = await response.json()
    assert body["pages"] == "412"  # int64 as a string, lowerCamelCase names
    assert body["isbn"] == str(2**63 + 1)  # uint64 too
    assert body["publishedAt"] == "1970-01-01T00:00:00Z"
    assert body["kind"] == "NOVEL"
    assert body["ratings"] == {"alice": 5}
    # Zero values are there for fields without presence; unset messages are not.
    assert (body["available"], body["score"], body["cover"], body["secret"]) == (
        False, 0, "", "",
    )  # fmt: skip
    assert "author" not in body
    assert "edition" not in body


async def test_upstream_not_found_is_a_404_problem_with_the_services_message(
    gateway: Client,
) -> None:
    body = await problem(await gateway.get("/api/v1/products/nope"), 404)
    assert body["detail"] == "product 'nope' not found"


async def test_unknown_route_is_404(gateway: Client) -> None:
    body = await problem(await gateway.get("/api/v1/nothing/here"), 404)
    assert "/api/v1/nothing/here" in body["detail"]


async def test_wrong_method_is_405_with_allow(gateway: Client) -> None:
    response = await gateway.put("/api/v1/products/p1")
    body = await problem(response, 405)
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD", "PATCH", "DELETE"}
    assert "PUT" in body["detail"]
    custom_verb = await gateway.get("/api/v1/analytics/events:batch")
    await problem(custom_verb, 405)
    assert custom_verb.headers["Allow"] == "POST"


async def test_a_variable_does_not_swallow_a_custom_verb(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    response = await gateway.post("/v1/books/b7:reserve", json={"user": "ann", "days": 3})
    assert response.status == 200, await response.text()
    assert (await response.json())["title"] == "ann:3"
    assert upstreams.shelf.requests["ReserveBook"].id == "b7"
    # GET /v1/books/{id} must not take "b7:reserve" as an id: only POST is bound there.
    wrong = await gateway.get("/v1/books/b7:reserve")
    await problem(wrong, 405)
    assert wrong.headers["Allow"] == "POST"


async def test_path_variable_overrides_the_body(gateway: Client, upstreams: FakeUpstreams) -> None:
    response = await gateway.post("/v1/books/b8:reserve", json={"id": "other", "user": "x"})
    assert response.status == 200
    assert upstreams.shelf.requests["ReserveBook"].id == "b8"


async def test_nested_segment_variables_and_body_field(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    response = await gateway.patch(
        "/v1/shelves/s1/books/b2", json={"title": "New", "pages": "12", "tags": ["a", "b"]}
    )
    assert response.status == 200, await response.text()
    book = upstreams.shelf.requests["UpdateBook"].book
    assert book.name == "shelves/s1/books/b2"
    assert (book.title, book.pages, list(book.tags)) == ("New", 12, ["a", "b"])
    assert (await response.json())["name"] == "shelves/s1/books/b2"


async def test_additional_binding_and_response_body(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    response = await gateway.get("/v1/shelves/s9/books/b3")
    assert response.status == 200
    request = upstreams.shelf.requests["GetBook"]
    assert (request.shelf, request.id) == ("shelves/s9", "b3")
    assert (await response.json())["id"] == "b3"
    title = await gateway.get("/v1/books/b3/title")
    assert title.status == 200
    assert await title.read() == b'"Dune"'


async def test_query_parameters_are_converted(gateway: Client, upstreams: FakeUpstreams) -> None:
    response = await gateway.get(
        "/v1/shelves/s1/books",
        params=[
            ("pageSize", "5"),
            ("page_token", "t"),
            ("filter.minPages", "100"),
            ("filter.author.displayName", "Ann"),
            ("tags", "x"),
            ("tags", "y"),
            ("kind", "ESSAY"),
            ("onlyActive", "true"),
            ("publishedAfter", "2024-01-02T03:04:05Z"),
            ("ratio", "0.5"),
            ("big", "9007199254740993"),
            ("minRating", "4"),
            ("years", "1999"),
            ("years", "2001"),
        ],
    )
    assert response.status == 200, await response.text()
    request = upstreams.shelf.requests["ListBooks"]
    assert request.parent == "shelves/s1"
    assert (request.page_size, request.page_token) == (5, "t")
    assert (request.filter.min_pages, request.filter.author.display_name) == (100, "Ann")
    assert list(request.tags) == ["x", "y"]
    assert (request.kind, request.only_active, request.ratio) == (2, True, 0.5)
    assert request.published_after.seconds == 1704164645
    assert request.big == 9007199254740993
    assert request.min_rating.value == 4
    assert list(request.years) == [1999, 2001]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("pageSize=ten", "pageSize"),
        ("filter.minPages=1.5", "filter.minPages"),
        ("onlyActive=maybe", "onlyActive"),
        ("kind=POEM", "kind"),
        ("small=-1", "small"),
        ("pageSize=1&pageSize=2", "pageSize"),
        ("nope=1", "nope"),
        ("extra=1", "extra"),
        ("parent=shelves/x", "parent"),
        ("publishedAfter=yesterday", "publishedAfter"),
    ],
)
async def test_query_value_that_does_not_convert_is_a_400_naming_it(
    gateway: Client, query: str, field: str
) -> None:
    body = await problem(await gateway.get(f"/v1/shelves/s1/books?{query}"), 400)
    assert [e["field"] for e in body["errors"]] == [field]
    assert field in body["detail"]


async def test_malformed_json_names_the_position(gateway: Client) -> None:
    response = await gateway.post(
        "/api/v1/auth/register",
        data=b'{"email": "a@b.c",\n "password": }',
        headers={"Content-Type": "application/json"},
    )
    body = await problem(response, 400)
    assert "line 2, column 14 (char 32)" in body["detail"]


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"emial": "a@b.c"}, "emial", "unknown field"),
        ({"email": 5}, "email", "expected a string"),
        ({"display_name": ["x"]}, "displayName", "expected a string"),
    ],
)
async def test_body_field_errors_name_the_json_field(
    gateway: Client, payload: dict[str, Any], field: str, message: str
) -> None:
    body = await problem(await gateway.post("/api/v1/auth/register", json=payload), 400)
    assert body["errors"] == [{"field": field, "message": message}]


async def test_nested_body_field_errors_have_the_full_path(gateway: Client) -> None:
    response = await gateway.patch("/v1/shelves/s1/books/b1", json={"author": {"age": "old"}})
    body = await problem(response, 400)
    assert body["errors"] == [{"field": "book.author.age", "message": "expected an integer"}]


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"42", b"null"])
async def test_a_body_that_is_not_an_object_is_a_400(gateway: Client, payload: bytes) -> None:
    response = await gateway.post(
        "/api/v1/auth/register", data=payload, headers={"Content-Type": "application/json"}
    )
    body = await problem(response, 400)
    assert "JSON object" in body["detail"]


async def test_wrong_content_type_is_415(gateway: Client, upstreams: FakeUpstreams) -> None:
    before = upstreams.shelf.calls["ArchiveAll"]
    response = await gateway.post("/v1/books:archive", data=b"ids=1", headers={
        "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    body = await problem(response, 415)
    assert "application/json" in body["detail"]
    assert upstreams.shelf.calls["ArchiveAll"] == before


async def test_json_with_a_suffix_media_type_is_accepted(gateway: Client) -> None:
    response = await gateway.post(
        "/v1/books:archive",
        data=b'{"ids": ["1", "2"]}',
        headers={"Content-Type": "application/merge-patch+json; charset=utf-8"},
    )
    assert response.status == 200
    assert await response.json() == {"archived": 2}


async def test_empty_body_is_an_empty_message(gateway: Client) -> None:
    response = await gateway.post("/v1/books:archive")
    assert response.status == 200, await response.text()
    assert await response.json() == {"archived": 0}


async def test_head_of_a_get_route(gateway: Client) -> None:
    response = await gateway.head("/api/v1/products/p1")
    assert response.status == 200
    assert await response.read() == b""
