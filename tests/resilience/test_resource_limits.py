"""Resource limits on every route of the running mesh (OWASP API4, and API6's rate limits).

- every body: one byte over its route's limit is a 413 (announced or chunked), the limit
  itself is not; the limit of each route comes from the gateway's own settings and policy
  file (and, for chat's REST routes, the smaller of that and chat's own);
- every list: a page size over the maximum (or otherwise out of range) is a 400 naming the
  parameter, the maximum itself returns at most that many; a list without a page size must
  be bounded some other way, said and checked here;
- every API route is counted by the rate limiter, and a limit that is reached is a 429 with
  ``Retry-After`` (a tight policy from ``limits_policies.toml``);
- request heads over the parser's limits are a 414 or 431 problem that echoes nothing.

The mesh of this module runs with ``limits_policies.toml``. Routes come from the live
``/openapi.json``, so a new route is held to the same limits or fails a test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.policy import CHAT_HTTP, POLICIES_VAR
from gateway.settings import GatewaySettings
from mesh.harness import BackingUrls
from mesh.settings import Env
from services.chat.app import BODY_LIMIT_BYTES as CHAT_BODY_LIMIT
from tests.e2e.client import call
from tests.e2e.conftest import running_mesh
from tests.e2e.mesh_process import MeshProcess
from tests.resilience.inventory import Operation
from tests.resilience.tally import TALLY
from tests.resilience.world import World

POLICIES = Path(__file__).with_name("limits_policies.toml")
PROBLEM = "application/problem+json"
PAGE_MAX = 100  # DESIGN.md: pageSize default 20, max 100 (and `limit` of the same range)
SIZE_PARAMETERS = ("pageSize", "limit")


@pytest.fixture(scope="module")
def mesh(backing: BackingUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcess]:
    """The whole mesh with this module's policy file."""
    extra = {POLICIES_VAR: str(POLICIES)}
    with running_mesh(backing, tmp_path_factory.mktemp("mesh-data"), extra) as running:
        yield running


@pytest.fixture(scope="module")
def settings(mesh: MeshProcess) -> GatewaySettings:
    """The gateway's settings, read from the same environment the gateway was started with."""
    return GatewaySettings.from_env(Env(mesh.env))


def policy_name(op: Operation) -> str:
    return CHAT_HTTP if op.operation_id.startswith("chat.") else op.operation_id


def body_limit(settings: GatewaySettings, op: Operation) -> int:
    limit = settings.route_policy(policy_name(op)).body_limit_bytes
    return min(limit, CHAT_BODY_LIMIT) if op.operation_id.startswith("chat.") else limit


def filled(world: World, op: Operation) -> str:
    """The URL of `op` with a fresh, unknown id: nothing real can change."""
    return op.url(world.gateway, **dict.fromkeys(op.variables, str(uuid.uuid4())))


def json_of_size(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    body = b'{"padding":"' + b"a" * (size - 14) + b'"}'
    assert len(body) == size
    return body


def assert_problem(status: int, headers: Any, body: Any, expected: int, what: object) -> None:
    if status >= 500:
        TALLY.saw_server_errors(1)
    assert status == expected, (what, status, body)
    assert headers["Content-Type"].startswith(PROBLEM), (what, headers["Content-Type"])
    assert body["status"] == status, (what, body)


async def _chunks(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_every_body_over_its_routes_limit_is_413(
    ops: list[Operation],
    world: World,
    settings: GatewaySettings,
    http: aiohttp.ClientSession,
) -> None:
    writes = [op for op in ops if op.has_body]
    assert len(writes) >= 10
    limits = {str(op): body_limit(settings, op) for op in writes}
    assert len(set(limits.values())) >= 3, limits  # auth 4 KiB, chat 64 KiB, default 1 MiB
    tried = 0
    for op in writes:
        limit = limits[str(op)]
        url = filled(world, op)
        headers = {"Content-Type": "application/json"}
        token = world.token(op.access)
        over = json_of_size(limit + 1)
        status, answer_headers, problem = await call(http, op.method, url, token, data=over,
                                                     headers=headers)  # fmt: skip
        assert_problem(status, answer_headers, problem, 413, (str(op), "announced"))
        assert str(limit) in problem["detail"], (str(op), problem)
        status, answer_headers, problem = await call(
            http, op.method, url, token, data=_chunks(over), headers=headers
        )
        assert_problem(status, answer_headers, problem, 413, (str(op), "chunked"))
        status, _, answer = await call(
            http, op.method, url, token, data=json_of_size(limit), headers=headers
        )
        assert status != 413, (str(op), "at the limit", status, answer)
        assert status < 500, (str(op), "at the limit", status, answer)
        tried += 3
    TALLY.tried("limits", tried)


# Lists without a page size, and what bounds them instead.
BOUNDED: dict[str, str] = {
    "catalog.v1.CatalogService.ListCategories": "one entry per category in use",
    "users.v1.UsersService.GetJwks": "the configured signing keys (one, two while rotating)",
    "analytics.v1.AnalyticsService.CountEvents": "buckets of a range of at most 400 days",
    "analytics.v1.AnalyticsService.CountUniques": "buckets of a range of at most 400 days",
    "analytics.v1.AnalyticsService.Funnel": "one entry per step, 2 to 10 steps",
}
_RANGE = {"type": "page.view", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
# Required parameters of some lists, so that only the size is wrong.
REQUIRED: dict[str, dict[str, str]] = {
    "analytics.v1.AnalyticsService.TopValues": {**_RANGE, "property": "path"},
}
# Too large for the bounded ones: each a 400 naming the parameter.
OVER_BOUNDS: dict[str, list[tuple[dict[str, str], str]]] = {
    "analytics.v1.AnalyticsService.CountEvents": [
        ({**_RANGE, "to": "2027-02-06T00:00:00Z"}, "to"),
        ({**_RANGE, "to": "2026-01-09T00:00:00Z", "interval": "minute"}, "interval"),
    ],
    "analytics.v1.AnalyticsService.CountUniques": [
        ({**_RANGE, "from": "2024-01-01T00:00:00Z"}, "to"),
    ],
    "analytics.v1.AnalyticsService.Funnel": [
        (
            {
                "from": _RANGE["from"],
                "to": _RANGE["to"],
                "steps": ",".join(f"s{i}" for i in range(11)),
                "within": "1h",
            },
            "steps",
        ),
    ],
}
BAD_SIZES = (str(PAGE_MAX + 1), "0", "-1", "abc", "1.5", "1e3", str(10**20))


def _arrays(op: Operation, answer: Any) -> list[list[Any]]:
    return [v for v in answer.values() if isinstance(v, list)] if isinstance(answer, dict) else []


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", [])
    return kind if isinstance(kind, list) else [kind]


def _returns_a_list(op: Operation) -> bool:
    """An answer with an array of objects (a user's few `roles` do not make a list)."""
    content = op.spec["responses"]["200"].get("content", {}).get("application/json", {})
    schema = op.resolve(content.get("schema", {}))
    for member in schema.get("properties", {}).values():
        member = op.resolve(member)
        items = member.get("items", {})
        if "array" in _types(member) and ("$ref" in items or "object" in _types(items)):
            return True
    return False


def _named(problem: Any, name: str) -> bool:
    return any(e["field"] == name for e in problem.get("errors", []))


async def test_every_list_bounds_its_size(
    ops: list[Operation], world: World, http: aiohttp.ClientSession
) -> None:
    lists = [op for op in ops if op.method == "GET" and _returns_a_list(op)]
    assert len(lists) >= 8, [str(op) for op in lists]
    tried = 0
    for op in lists:
        token = world.token(op.access)
        url = op.url(world.gateway, **dict.fromkeys(op.variables, world.private_room["id"]))
        if op.operation_id == "chat.History":
            token = world.alice.access_token  # her room
        required = REQUIRED.get(op.operation_id, {})
        sizes = [name for name in SIZE_PARAMETERS if name in op.query]
        if not sizes:
            assert op.operation_id in BOUNDED, f"{op} lists without a page size: bound it"
            for params, name in OVER_BOUNDS.get(op.operation_id, []):
                status, headers, problem = await call(http, "GET", url, token, params=params)
                tried += 1
                assert_problem(status, headers, problem, 400, (str(op), params))
                assert _named(problem, name), (str(op), problem)
            continue
        [size] = sizes
        for bad in BAD_SIZES:
            status, headers, problem = await call(
                http, "GET", url, token, params={**required, size: bad}
            )
            tried += 1
            assert_problem(status, headers, problem, 400, (str(op), size, bad))
            assert _named(problem, size), (str(op), bad, problem)
        status, _, answer = await call(
            http, "GET", url, token, params={**required, size: str(PAGE_MAX)}
        )
        tried += 1
        assert status == 200, (str(op), answer)
        assert all(len(array) <= PAGE_MAX for array in _arrays(op, answer)), str(op)
        if "pageToken" in op.query:
            for forged in ("not-a-token", "A" * 4000, "eyJhbGciOiJub25lIn0.e30."):
                status, headers, problem = await call(
                    http, "GET", url, token, params={**required, "pageToken": forged}
                )
                tried += 1
                assert_problem(status, headers, problem, 400, (str(op), "pageToken"))
                assert _named(problem, "pageToken"), (str(op), problem)
    TALLY.tried("limits", tried)


async def test_a_rate_limit_that_is_reached_answers_429_with_retry_after(
    world: World, http: aiohttp.ClientSession
) -> None:
    """The tight policy: 3 a minute per address on the categories."""
    answers = [await call(http, "GET", f"{world.gateway}/api/v1/categories") for _ in range(5)]
    statuses = [status for status, _, _ in answers]
    assert 429 in statuses, statuses
    first = statuses.index(429)
    assert first <= 3, statuses
    assert all(s == 200 for s in statuses[:first]), statuses
    assert all(s == 429 for s in statuses[first:]), statuses
    status, headers, problem = answers[-1]
    assert_problem(status, headers, problem, 429, "tight")
    assert int(headers["Retry-After"]) >= 1
    assert headers["RateLimit-Policy"].startswith('"tight";q=3;w=60')
    assert "tight" in str(problem)
    TALLY.tried("limits", len(answers))


async def test_every_api_route_is_counted_by_the_rate_limiter(
    ops: list[Operation], world: World, settings: GatewaySettings, http: aiohttp.ClientSession
) -> None:
    """One call to each route (fresh ids, empty bodies: nothing changes); each answer carries
    the RateLimit headers of the group the policy file puts it in. The gateway's own
    documents (health, this OpenAPI document) are not rate limited."""
    tried = 0
    for op in ops:
        if op.operation_id.startswith("gateway."):
            continue
        rate = settings.route_policy(policy_name(op)).rate_limit
        assert rate is not None, f"{op} has no rate limit in {POLICIES.name}"
        status, headers, answer = await call(
            http,
            op.method,
            filled(world, op),
            world.admin.access_token,
            json={} if op.has_body else None,
        )
        tried += 1
        assert status < 500, (str(op), status, answer)
        assert headers.get("RateLimit-Policy", "").startswith(f'"{rate.name}";'), (str(op), headers)
        assert "RateLimit" in headers, str(op)
    TALLY.tried("limits", tried)


async def _raw(port: int, head: bytes) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    head_part, _, body = answer.partition(b"\r\n\r\n")
    return head_part, body


async def test_request_heads_over_the_limits_are_414_and_431_without_an_echo(
    mesh: MeshProcess, world: World, http: aiohttp.ClientSession
) -> None:
    port = mesh.ports["gateway"]
    secret = b"Bearer s3cr3t-" + b"x" * 9000
    cases = [
        (b"GET /api/v1/products?q=" + b"a" * 20000 + b" HTTP/1.1\r\nHost: g\r\n\r\n", b"414"),
        (b"GET /api/v1/users/me HTTP/1.1\r\nHost: g\r\nAuthorization: " + secret + b"\r\n\r\n",
         b"431"),
        (b"GET /api/v1/products HTTP/1.1\r\nHost: g\r\nX-" + b"n" * 9000 + b": 1\r\n\r\n", b"431"),
        (b"GET /api/v1/products HTTP/1.1\r\nHost: g\r\n"
         + b"".join(b"X-H%d: 1\r\n" % i for i in range(300)) + b"\r\n", b"431"),
    ]  # fmt: skip
    for request, expected in cases:
        head, body = await _raw(port, request)
        assert head.split(b" ")[1] == expected, head
        assert b"Content-Type: application/problem+json" in head
        assert b"Server: mesh\r\n" in head  # not aiohttp's name and version
        for echo in (b"s3cr3t", b"xxxxxxxx", b"nnnnnnnn"):
            assert echo not in body, (echo, body)
        assert len(body) < 1000
    TALLY.tried("limits", len(cases))
    status, _, _ = await call(http, "GET", f"{world.gateway}/api/v1/products")
    assert status == 200  # and the gateway serves on


async def test_parameters_of_extreme_size_are_refused_or_bounded(
    ops: list[Operation], world: World, http: aiohttp.ClientSession
) -> None:
    tried = 0
    for op in ops:
        if op.operation_id.startswith("gateway.") or op.operation_id.endswith("ListCategories"):
            continue  # not parameterised (and the categories are on the tight policy)
        token = world.token(op.access)
        if op.variables:  # an id of 15,000 characters: within the request line limit
            url = op.url(world.gateway, **dict.fromkeys(op.variables, "i" * 15000))
            status, headers, _ = await call(
                http, op.method, url, token, json={} if op.has_body else None
            )
            tried += 1
            assert 400 <= status < 500, (str(op), status)
            assert headers["Content-Type"].startswith(PROBLEM)
        if op.method != "GET" or not op.query:
            continue
        url = filled(world, op)
        repeated = "&".join([f"{op.query[0]}=1"] * 1000)
        unknown = "&".join(f"p{i}=1" for i in range(1000))
        for query in (repeated, unknown):
            status, headers, answer = await call(http, "GET", f"{url}?{query}", token)
            tried += 1
            assert status < 500, (str(op), status, answer)
            if not op.operation_id.startswith("chat."):  # chat ignores what it does not use
                assert status == 400, (str(op), query[:40], status)
                assert headers["Content-Type"].startswith(PROBLEM)
    TALLY.tried("limits", tried)
