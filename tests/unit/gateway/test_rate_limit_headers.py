"""The RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-headers-11)."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.policy import RateLimit
from gateway.ratelimit.gcra import Decision
from gateway.ratelimit.headers import (
    FIELDS_KEY,
    add_rate_limit_headers,
    limit_field,
    policy_field,
    retry_after,
)

# An sf-list of one item: a String and parameters with Integer or String values (RFC 9651).
SF_ITEM = re.compile(r'"[a-z_][a-z0-9_]*"(;[a-z*][a-z0-9_.*-]*=(\d+|"[^"\\]*"))+')


def test_policy_field() -> None:
    general = RateLimit("general", limit=100, window_seconds=1, burst=200)
    assert policy_field(general) == '"general";q=100;w=1;mesh-burst=200'
    auth = RateLimit("auth", limit=10, window_seconds=60, burst=10, key="address")
    assert policy_field(auth) == '"auth";q=10;w=60'
    ingest = RateLimit("ingest", 1000, 1, 2000, cost="events")
    assert policy_field(ingest) == '"ingest";q=1000;w=1;mesh-burst=2000;mesh-unit="events"'
    for field in (policy_field(general), policy_field(auth), policy_field(ingest)):
        assert SF_ITEM.fullmatch(field), field


def test_a_fractional_window_is_advertised_in_whole_seconds() -> None:
    assert policy_field(RateLimit("p", limit=5, window_seconds=0.5, burst=5)) == (
        '"p";q=10;w=1;mesh-burst=5'
    )
    assert policy_field(RateLimit("p", 3, 1.5, 3)).startswith('"p";q=4;w=2')


def test_limit_field_and_retry_after() -> None:
    rate_limit = RateLimit("general", limit=100, window_seconds=1, burst=200)
    allowed = Decision(True, remaining=57, retry_after_seconds=0, next_unit_seconds=0.004)
    assert limit_field(rate_limit, allowed) == '"general";r=57;t=1'
    full = Decision(True, remaining=200, retry_after_seconds=0, next_unit_seconds=0)
    assert limit_field(rate_limit, full) == '"general";r=200;t=0'
    refused = Decision(False, remaining=0, retry_after_seconds=0.004, next_unit_seconds=0.004)
    assert retry_after(refused) == 1
    assert retry_after(Decision(False, 0, 4.2, 4.2)) == 5
    assert retry_after(Decision(False, 0, 6.0, 6.0)) == 6
    assert SF_ITEM.fullmatch(limit_field(rate_limit, refused))


async def test_the_hook_puts_the_stored_fields_on_any_response() -> None:
    request = make_mocked_request("GET", "/")
    untouched = web.Response()
    await add_rate_limit_headers(request, untouched)
    assert "RateLimit" not in untouched.headers
    assert "RateLimit-Policy" not in untouched.headers
    request[FIELDS_KEY] = ('"p";q=1;w=1', '"p";r=0;t=1')
    response = web.StreamResponse(status=404)
    await add_rate_limit_headers(request, response)
    assert response.headers["RateLimit-Policy"] == '"p";q=1;w=1'
    assert response.headers["RateLimit"] == '"p";r=0;t=1'
    request[FIELDS_KEY] = ('"p";q=1;w=1', None)  # allowance unknown (Redis away, closed)
    unknown = web.Response(status=503)
    await add_rate_limit_headers(request, unknown)
    assert unknown.headers["RateLimit-Policy"] == '"p";q=1;w=1'
    assert "RateLimit" not in unknown.headers
