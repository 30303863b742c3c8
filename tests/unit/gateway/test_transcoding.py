"""JSON/URL -> request message and response message -> JSON, per route."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from multidict import MultiDict

from gateway.body import NO_BODY
from gateway.routing import Route, build_routes
from gateway.transcoding import Transcoder, field_error, locate_error, scalar_from_string
from mesh.problem import ProblemError
from tests.unit.gateway.bookshelf import BOOKSHELF, message, new

PREFIX = "gwtest.v1.ShelfService."
ROUTES = {r.operation_id.removeprefix(PREFIX): r for r in build_routes([BOOKSHELF])}


def transcoder(name: str) -> tuple[Route, Transcoder]:
    return ROUTES[name], Transcoder(ROUTES[name])


def build(name: str, path: dict[str, str], query: str = "", body: object = NO_BODY) -> Any:
    _, t = transcoder(name)
    pairs = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    return t.request_message(path=path, query=MultiDict(pairs), body=body)


def errors_of(name: str, path: dict[str, str], query: str = "", body: object = NO_BODY) -> Any:
    with pytest.raises(ProblemError) as raised:
        build(name, path, query, body)
    assert raised.value.status == 400
    return [(e.field, e.message) for e in raised.value.errors]


def field(message_name: str, name: str) -> Any:
    return message(message_name).fields_by_name[name]


@pytest.mark.parametrize(
    ("message_name", "field_name", "raw", "expected"),
    [
        ("ListBooksRequest", "page_size", "-12", -12),
        ("ListBooksRequest", "big", "9223372036854775807", 9223372036854775807),
        ("ListBooksRequest", "small", "4294967295", 4294967295),
        ("ListBooksRequest", "page_size", "-0000000000000000000000012", -12),
        ("ListBooksRequest", "ratio", "1.5", 1.5),
        ("ListBooksRequest", "ratio", "NaN", "NaN"),
        ("ListBooksRequest", "ratio", "-Infinity", "-Infinity"),
        ("ListBooksRequest", "only_active", "true", True),
        ("ListBooksRequest", "only_active", "0", False),
        ("ListBooksRequest", "only_active", "FALSE", False),
        ("ListBooksRequest", "kind", "NOVEL", "NOVEL"),
        ("ListBooksRequest", "kind", "2", 2),
        ("ListBooksRequest", "min_rating", "7", 7),
        ("ListBooksRequest", "published_after", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        ("ListBooksRequest", "page_token", "a b", "a b"),
    ],
)
def test_scalar_conversion(message_name: str, field_name: str, raw: str, expected: object) -> None:
    assert scalar_from_string(field(message_name, field_name), raw) == expected


@pytest.mark.parametrize(
    ("field_name", "raw", "message"),
    [
        ("page_size", "2147483648", "out of range"),
        ("big", "9" * 5000, r"^out of range \[-9223372036854775808, 9223372036854775807\]$"),
        ("page_size", "1e3", "expected an integer"),
        ("small", "-1", "out of range"),
        ("ratio", "abc", "expected a number"),
        ("ratio", "inf", "expected a finite number"),
        ("only_active", "yes", "expected true or false"),
        ("kind", "POEM", "expected one of KIND_UNSPECIFIED, NOVEL, ESSAY"),
        ("kind", "9", "expected one of"),
        ("extra", "{}", "cannot be set from the URL"),
    ],
)
def test_scalar_conversion_errors(field_name: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scalar_from_string(field("ListBooksRequest", field_name), raw)


def test_query_builds_nested_and_repeated_fields() -> None:
    request = build(
        "ListBooks",
        {"parent": "shelves/1"},
        "filter.min_pages=3&filter.author.displayName=Ann&tags=a&tags=b&years=1&years=2",
    )
    assert request.parent == "shelves/1"
    assert (request.filter.min_pages, request.filter.author.display_name) == (3, "Ann")
    assert (list(request.tags), list(request.years)) == (["a", "b"], [1, 2])


def test_query_errors_are_all_reported_by_parameter_name() -> None:
    assert errors_of("ListBooks", {"parent": "shelves/1"}, "pageSize=x&bogus=1&filter.nope=2") == [
        ("pageSize", "expected an integer, got 'x'"),
        ("bogus", "unknown query parameter"),
        ("filter.nope", "unknown query parameter"),
    ]


def test_query_cannot_reset_path_or_body_fields() -> None:
    assert errors_of("GetBook.1", {"shelf": "shelves/1", "id": "b"}, "id=c") == [
        ("id", "already set by the path or the body")
    ]
    assert errors_of("UpdateBook", {"book.name": "shelves/1/books/2"}, "book.title=x") == [
        ("book.title", "already set by the path or the body")
    ]


def test_query_is_ignored_for_body_star_routes() -> None:
    request = build("ReserveBook", {"id": "b1"}, "user=q", body={"user": "u"})
    assert (request.id, request.user) == ("b1", "u")


def test_body_field_and_path_variable_merge() -> None:
    request = build(
        "UpdateBook",
        {"book.name": "shelves/1/books/2"},
        "updateMask=title,pages",
        body={"title": "T", "name": "ignored"},
    )
    assert request.book.name == "shelves/1/books/2"
    assert request.book.title == "T"
    assert list(request.update_mask.paths) == ["title", "pages"]


def test_path_variable_replaces_the_proto_name_in_the_body() -> None:
    request = build("ReserveBook", {"id": "b1"}, body={"id": "x", "days": 2})
    assert (request.id, request.days) == ("b1", 2)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"nope": 1}, [("nope", "unknown field")]),
        ({"days": "many"}, [("days", "expected an integer")]),
        ({"days": 1.5}, [("days", "expected an integer")]),
        ({"days": True}, [("days", "expected an integer")]),
        ({"days": 2**40}, [("days", "out of range")]),
        ({"user": 7}, [("user", "expected a string")]),
        ([1], None),
    ],
)
def test_body_errors(body: object, expected: list[tuple[str, str]] | None) -> None:
    errors = errors_of("ReserveBook", {"id": "b1"}, body=body)
    assert errors == (expected or [])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"author": {"age": "x"}}, ("book.author.age", "expected an integer")),
        ({"author": {"nick": "x"}}, ("book.author.nick", "unknown field")),
        ({"tags": "x"}, ("book.tags", "expected an array")),
        ({"ratings": {"a": "b"}}, ("book.ratings", "expected an integer")),
        ({"ratings": 5}, ("book.ratings", "expected an object")),
        ({"extra": 3}, ("book.extra", "expected an object")),
        ({"kind": "POEM"}, ("book.kind", "not one of the allowed values")),
        ({"published_at": "noon"}, ("book.publishedAt", "expected an RFC 3339 date-time string")),
        ({"edition": "one"}, ("book.edition", "expected an integer")),
    ],
)
def test_nested_body_errors_name_the_json_path(body: object, expected: tuple[str, str]) -> None:
    [error] = errors_of("UpdateBook", {"book.name": "shelves/1/books/2"}, body=body)
    assert error == expected


def test_field_error_from_a_deep_unknown_field() -> None:
    with pytest.raises(json_format.ParseError) as raised:
        json_format.ParseDict({"books": [{}, {"author": {"x": 1}}]}, new("ListBooksResponse"))
    error = field_error(message("ListBooksResponse"), raised.value)
    assert (error.field, error.message) == ("books[1].author.x", "unknown field")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"books": [1, 2]}, ("books[0]", "expected an object")),
        ({"books": [{}, None]}, ("books[1]", "expected an object")),
        ({"books": [{}, [1]]}, ("books[1]", "expected an object")),
        ({"books": [{}, {"pages": "x"}]}, ("books[1].pages", "expected an integer")),
        ({"books": [{"author": {"age": "x"}}]}, ("books[0].author.age", "expected an integer")),
        ({"books": [{"tags": [1]}]}, ("books[0].tags[0]", "expected a string")),
        ({"books": {}}, ("books", "expected an array")),
        ({"books": [{}], "nope": 1}, ("nope", "unknown field")),
    ],
)
def test_locate_error_names_the_item_of_a_repeated_message(
    document: dict[str, object], expected: tuple[str, str]
) -> None:
    descriptor = message("ListBooksResponse")
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(document, new("ListBooksResponse"))
    error = locate_error(descriptor, document)
    assert error is not None
    assert (error.field, error.message) == expected


def test_response_json_prints_zero_values_and_int64_strings() -> None:
    _, t = transcoder("GetBook")
    book = new("Book", id="b1", pages=3, isbn=2**64 - 1)
    body = orjson.loads(t.response_json(book))
    assert body["pages"] == "3"
    assert body["isbn"] == "18446744073709551615"
    assert (body["title"], body["available"], body["tags"], body["ratings"]) == ("", False, [], {})
    assert body["kind"] == "KIND_UNSPECIFIED"
    assert "publishedAt" not in body  # a message field without a value has presence


def test_response_body_selects_one_field() -> None:
    _, t = transcoder("GetBookTitle")
    assert t.response_json(new("Book", title="Dune", pages=1)) == b'"Dune"'
