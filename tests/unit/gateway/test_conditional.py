"""gateway.conditional: entity-tag lists, If-None-Match, forwarded If-Match."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.conditional import (
    forwarded_metadata,
    none_match,
    not_modified,
    opaque_tags,
    response_etag,
)


@pytest.mark.parametrize(
    ("header", "tags"),
    [
        ('"v1"', ['"v1"']),
        ('W/"v1", "v2"', ['"v1"', '"v2"']),
        ('"a,b", "c"', ['"a,b"', '"c"']),  # a comma inside a tag is part of it
        ('  "x"  ,  W/"y"  ', ['"x"', '"y"']),
        ('v1, "v2", "bad', ['"v2"']),  # malformed members match nothing
        ("", []),
    ],
)
def test_tag_lists(header: str, tags: list[str]) -> None:
    assert opaque_tags(header) == tags


def test_star() -> None:
    assert opaque_tags(" * ") is None
    assert none_match("*", '"v1"')


def test_if_none_match_uses_weak_comparison() -> None:
    assert none_match('W/"v1"', '"v1"')
    assert none_match('"v0", "v1"', '"v1"')
    assert none_match('"v1"', 'W/"v1"')
    assert not none_match('"v2"', '"v1"')
    assert not none_match('"V1"', '"v1"')


def test_not_modified_only_for_safe_methods_with_an_etag() -> None:
    get = make_mocked_request("GET", "/x", headers={"If-None-Match": '"v1"'})
    assert not_modified(get, '"v1"')
    assert not not_modified(get, '"v2"')
    assert not not_modified(get, None)
    head = make_mocked_request("HEAD", "/x", headers={"If-None-Match": "*"})
    assert not_modified(head, '"v1"')
    patch = make_mocked_request("PATCH", "/x", headers={"If-None-Match": '"v1"'})
    assert not not_modified(patch, '"v1"')
    assert not not_modified(make_mocked_request("GET", "/x"), '"v1"')


def test_if_match_is_forwarded_on_writes_only() -> None:
    patch = make_mocked_request("PATCH", "/x", headers={"If-Match": '"v3"'})
    assert forwarded_metadata(patch) == (("if-match", '"v3"'),)
    get = make_mocked_request("GET", "/x", headers={"If-Match": '"v3"'})
    assert forwarded_metadata(get) == ()
    assert forwarded_metadata(make_mocked_request("DELETE", "/x")) == ()
    huge = make_mocked_request("PATCH", "/x", headers={"If-Match": '"' + "v" * 2000 + '"'})
    assert forwarded_metadata(huge) == ()


def test_only_well_formed_service_etags_are_used() -> None:
    assert response_etag((("etag", '"v1"'),)) == '"v1"'
    assert response_etag((("other", "x"), ("etag", 'W/"v1"'))) == 'W/"v1"'
    assert response_etag((("etag", "v1"),)) is None
    assert response_etag((("etag", '"v1"\r\nSet-Cookie: x'),)) is None
    assert response_etag(()) is None
    assert response_etag(None) is None
    assert response_etag((), (("etag", '"t"'),)) == '"t"'  # from the trailers
