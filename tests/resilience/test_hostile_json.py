"""Hostile JSON to every write route of the running mesh, and what it costs in memory.

Every route with a request body (from the live ``/openapi.json``) gets each input below: JSON
nested 10,000 deep, 100,000-item arrays, 1 MB strings and keys, 100,000 keys, bytes that
are not UTF-8, broken JSON, NaN and Infinity, numbers no type holds, a byte order mark, lone
surrogates, NUL and control characters in every string member, duplicated keys, bodies that
are not objects and the wrong media types. Each must get a clear 4xx: an
``application/problem+json`` body whose detail (or ``errors[].field``) names what is wrong,
small (nothing echoed back at length), and never a 5xx or a process restart.

The gateway's and every service's resident set size (``VmRSS`` of ``/proc/<pid>/status``) is
read after a warm-up round and again after more rounds of the same inputs; growth past
`RSS_GROWTH_LIMIT` fails the test. The figures are printed and written to
``test-artifacts/resilience-memory.json``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest_asyncio

from tests.e2e.client import PASSWORD, call
from tests.e2e.mesh_process import MeshProcess, pid_alive
from tests.resilience.inventory import Operation, operations
from tests.resilience.tally import TALLY
from tests.resilience.world import World, product_body

PROBLEM = "application/problem+json"
RSS_GROWTH_LIMIT = 25 * 1024 * 1024  # before the grpc_server fix users grew ~8 MiB a round
ROUNDS = 5  # after the warm-up round
MAX_ANSWER_BYTES = 16 * 1024  # a problem never carries the hostile input back
MEMORY_REPORT = Path("test-artifacts") / "resilience-memory.json"
# Parse-level problems name what is wrong with the document in their detail.
DEPTH = re.compile(r"depth|deep|nest", re.I)
NOT_JSON = re.compile(r"JSON\b.*\bcolumn \d+", re.I)  # and where: "at line 1, column 9"
UTF8 = re.compile(r"not valid UTF-8 \(byte \d+\)", re.I)  # and which byte
OBJECT = re.compile(r"object", re.I)
# A body of `null` for a route whose body is one member (`body: "product"`) is that member
# left out: the answer names the required fields instead.
OBJECT_OR_EMPTY = re.compile(r"object|required", re.I)
MEDIA = re.compile(r"application/json", re.I)


@pytest_asyncio.fixture(scope="module")
async def writes(mesh: MeshProcess) -> list[Operation]:
    async with aiohttp.ClientSession() as http:
        found = [op for op in await operations(http, mesh.gateway) if op.has_body]
    assert len(found) >= 10
    return found


@dataclass(frozen=True)
class Hostile:
    name: str
    body: bytes
    statuses: tuple[int, ...] = (400,)
    detail: re.Pattern[str] | None = None  # the detail must match
    names_member: bool = False  # errors[].field (or the detail) names the member
    content_type: str | None = "application/json"


def _member(op: Operation) -> str:
    """The first member of the body a client may write (what the hostile value goes into)."""
    for name, schema in op.body_properties().items():
        if name not in op.variables and not Operation.read_only(schema):
            return name
    return "name"  # no member but the path's: an unknown member is as good


def _string_members(op: Operation) -> list[str]:
    found = []
    for name, schema in op.body_properties().items():
        kinds = op.resolve(schema).get("type", [])
        is_string = "string" in (kinds if isinstance(kinds, list) else [kinds])
        if is_string and name not in op.variables and not Operation.read_only(schema):
            found.append(name)
    return found


def _nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def hostile_inputs(world: World, op: Operation) -> list[Hostile]:
    member = _member(op)
    key = member.encode()
    valid = {k: v for k, v in _valid_body(world, op).items() if k != member}

    def within(value: bytes) -> bytes:
        """A valid body with `value` (raw JSON text) as `member`."""
        rest = orjson.dumps(valid)[1:-1]
        return b"{" + rest + (b"," if rest else b"") + b'"' + key + b'":' + value + b"}"

    big = (400, 413)  # 413 where the route's limit is below the input (chat: 64 KiB)
    cases = [
        Hostile("arrays nested 10,000 deep", _nested(10_000), detail=DEPTH),
        Hostile("objects nested 10,000 deep", b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
                detail=DEPTH),
        Hostile("10,000 deep in a member", within(_nested(10_000)), detail=DEPTH),
        Hostile("500 deep in a member", within(_nested(500)), big, names_member=True),
        Hostile("100,000-item array as the body", _nested(1, b",".join([b"0"] * 100_000)),
                big, detail=OBJECT),
        Hostile("100,000-item array in a member", within(_nested(1, b",".join([b"0"] * 100_000))),
                big, names_member=True),
        Hostile("1 MB string in a member", within(b'"' + b"x" * 1_000_000 + b'"'),
                (*big, 401, 429), names_member=True),  # sign-in: wrong, then throttled
        Hostile("1 MB key", b'{"' + b"k" * 1_000_000 + b'":1}', big),
        Hostile("100,000 keys", b"{" + b",".join(b'"k%d":1' % i for i in range(100_000)) + b"}",
                big),
        Hostile("bytes that are not UTF-8", within(b'"\xff\xfe\xfd"'), detail=UTF8),
        Hostile("Latin-1 declared as such", within(b'"caf\xe9"'), detail=UTF8,
                content_type="application/json; charset=iso-8859-1"),
        Hostile("truncated", within(b"")[:-1], detail=NOT_JSON),
        Hostile("trailing comma", b'{"' + key + b'":1,}', detail=NOT_JSON),
        Hostile("single quotes", b"{'" + key + b"':1}", detail=NOT_JSON),
        Hostile("a comment", b'{"' + key + b'":1 /* hi */}', detail=NOT_JSON),
        Hostile("NaN", within(b"NaN"), detail=NOT_JSON),
        Hostile("Infinity", within(b"Infinity"), detail=NOT_JSON),
        Hostile("-Infinity", within(b"-Infinity"), detail=NOT_JSON),
        Hostile("1e400", within(b"1e400"), detail=NOT_JSON),
        Hostile("2**64", within(str(2**64).encode()), (400, 401), names_member=True),
        Hostile("-2**63-1", within(str(-(2**63) - 1).encode()), (400, 401), names_member=True),
        Hostile("a byte order mark", b"\xef\xbb\xbf" + within(b"1"), detail=NOT_JSON),
        Hostile("a lone surrogate", within(b'"\\ud800"'), detail=NOT_JSON),
        Hostile("null", b"null", detail=OBJECT_OR_EMPTY),
        Hostile("a number", b"42", detail=OBJECT),
        Hostile("a string", b'"{}"', detail=OBJECT),
        Hostile("text/plain", within(b"1"), (415,), detail=MEDIA, content_type="text/plain"),
        Hostile("a form", key + b"=1", (415,), detail=MEDIA,
                content_type="application/x-www-form-urlencoded"),
        Hostile("XML", b"<a>1</a>", (415,), detail=MEDIA, content_type="application/xml"),
        Hostile("multipart", b"--b\r\n\r\n1\r\n--b--\r\n", (415,), detail=MEDIA,
                content_type="multipart/form-data; boundary=b"),
        Hostile("no media type", within(b"1"), (415,), content_type=None),
    ]  # fmt: skip
    return cases


def _token(world: World, op: Operation) -> str | None:
    return world.token(op.access)


def _url(world: World, op: Operation) -> str:
    values = {}
    for variable in op.variables:
        if op.path.startswith("/api/v1/products/"):
            values[variable] = world.product["id"]
        elif op.path.startswith("/api/v1/reservations/"):
            values[variable] = world.reservation["reservationId"]
        elif op.path.startswith("/api/v1/chat/rooms/"):
            values[variable] = world.public_room["id"]
        else:
            raise AssertionError(f"{op}: no object for {{{variable}}}: add one to _url()")
    return op.url(world.gateway, **values)


def _mentions(problem: Any, member: str) -> bool:
    """Whether the problem names `member` (``product.sku`` names ``sku``; so do its items)."""
    for error in problem.get("errors", []):
        path = error.get("field", "")
        for start in [0] + [i + 1 for i, c in enumerate(path) if c == "."]:
            rest = path[start:]
            if rest == member or rest.startswith((f"{member}.", f"{member}[")):
                return True
    return member in problem.get("detail", "")


async def _send(
    http: aiohttp.ClientSession, op: Operation, url: str, token: str | None, case: Hostile
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    async with http.request(op.method, url, data=case.body, headers=headers) as response:
        if case.content_type is None:
            # aiohttp would label raw bytes application/octet-stream: take it off the wire.
            assert response.request_info.headers.get("Content-Type") in (
                None,
                "application/octet-stream",
            )
        return response.status, dict(response.headers), await response.read()


def _check(op: Operation, case: Hostile, status: int, headers: dict[str, str], raw: bytes) -> None:
    what = (str(op), case.name)
    if status >= 500:
        TALLY.saw_server_errors(1)
    assert status in case.statuses, (what, status, raw[:300])
    assert headers.get("Content-Type", "").startswith(PROBLEM), (what, headers)
    assert len(raw) <= MAX_ANSWER_BYTES, (what, len(raw), raw[:300])
    problem = orjson.loads(raw)
    assert problem["status"] == status, what
    if case.detail is not None and status not in (401, 413, 429):
        assert case.detail.search(problem["detail"]), (what, problem["detail"])
    if case.names_member and status == 400:
        assert _mentions(problem, _member(op)), (what, problem)


async def _round(http: aiohttp.ClientSession, world: World, writes: list[Operation]) -> int:
    sent = 0
    for op in writes:
        url, token = _url(world, op), _token(world, op)
        for case in hostile_inputs(world, op):
            status, headers, raw = await _send(http, op, url, token, case)
            sent += 1
            _check(op, case, status, headers, raw)
    return sent


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def current_pids(mesh: MeshProcess) -> dict[str, int]:
    return {name: pids[-1] for name, pids in mesh.child_pids().items()}


async def test_hostile_bodies_get_clear_4xx_and_memory_stays_bounded(
    mesh: MeshProcess, world: World, writes: list[Operation], http: aiohttp.ClientSession
) -> None:
    pids = current_pids(mesh)
    assert {"gateway", "users", "catalog", "analytics"} <= set(pids), pids
    sent = await _round(http, world, writes)  # warm-up: caches, pools and arenas fill
    before = {name: rss_bytes(pid) for name, pid in pids.items()}
    for _ in range(ROUNDS):
        sent += await _round(http, world, writes)
    after = {name: rss_bytes(pid) for name, pid in pids.items()}
    TALLY.tried("hostile-json", sent)
    assert current_pids(mesh) == pids, "a process restarted while it was fed hostile JSON"
    assert all(pid_alive(pid) for pid in pids.values())
    figures = {
        name: {
            "before_mib": round(before[name] / 2**20, 1),
            "after_mib": round(after[name] / 2**20, 1),
            "growth_mib": round((after[name] - before[name]) / 2**20, 1),
        }
        for name in sorted(pids)
    }
    report = {"rounds_after_warm_up": ROUNDS, "requests": sent, "rss": figures}
    MEMORY_REPORT.parent.mkdir(exist_ok=True)
    MEMORY_REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print("\nRSS under hostile JSON:", json.dumps(report, indent=2))
    for name in pids:
        growth = after[name] - before[name]
        assert growth < RSS_GROWTH_LIMIT, (name, figures[name])


def _email() -> str:
    return f"h{uuid.uuid4().hex[:12]}@example.org"


# A valid body for each write: a hostile value goes in beside valid ones, so the problem
# answered is about it and nothing else.
VALID_BODIES: dict[str, Callable[[World], dict[str, Any]]] = {
    "users.v1.UsersService.Register": lambda w: {
        "email": _email(),
        "password": PASSWORD,
        "displayName": "Hostile",
    },
    "users.v1.UsersService.Login": lambda w: {"email": _email(), "password": PASSWORD},
    "users.v1.UsersService.Refresh": lambda w: {"refreshToken": "x" * 43},
    "users.v1.UsersService.Logout": lambda w: {"refreshToken": "x" * 43},
    "users.v1.UsersService.UpdateMe": lambda w: {"displayName": "Alice"},
    "catalog.v1.CatalogService.CreateProduct": lambda w: product_body(),
    "catalog.v1.CatalogService.UpdateProduct": lambda w: {"name": "Hostile kettle"},
    "catalog.v1.CatalogService.ReserveProduct": lambda w: {
        "quantity": 1,
        "idempotencyKey": uuid.uuid4().hex,
    },
    "catalog.v1.CatalogService.ReleaseReservation": lambda w: {},
    "analytics.v1.AnalyticsService.IngestEvents": lambda w: {
        "events": [
            {"eventId": str(uuid.uuid4()), "type": "hostile", "timestamp": "2026-11-20T08:00:00Z"}
        ]
    },
    "chat.CreateRoom": lambda w: {"name": "hostile"},
    "chat.AddMember": lambda w: {"userId": w.bob.id},
}


def _valid_body(world: World, op: Operation) -> dict[str, Any]:
    make = VALID_BODIES.get(op.operation_id)
    assert make is not None, f"{op}: add a valid body to VALID_BODIES"
    return make(world)


async def test_nul_and_control_characters_in_every_string_member_are_never_a_5xx(
    world: World, writes: list[Operation], http: aiohttp.ClientSession
) -> None:
    """PostgreSQL text cannot hold NUL: a NUL that reached it was a 500 from the users
    service (register, login, display names) before it was refused as input."""
    sent = 0
    event = {"eventId": "", "type": "control.test", "timestamp": "2026-11-20T08:00:00Z"}
    for op in writes:
        url, token = _url(world, op), _token(world, op)
        targets: list[tuple[str | None, str]] = [(None, m) for m in _string_members(op)]
        if op.operation_id.endswith("IngestEvents"):  # the strings of an event
            targets += [("events", m) for m in ("eventId", "type", "timestamp", "sentAt",
                                                "anonymousId")]  # fmt: skip
        for into, member in targets:
            for text in ("a\u0000b", "\u0000", "tab\tnew\nline", "bell\u0007", "del\u007f"):
                if into is None:
                    body = {**_valid_body(world, op), member: text}
                else:
                    body = {into: [{**event, "eventId": str(uuid.uuid4()), member: text}]}
                status, headers, answer = await call(http, op.method, url, token, json=body)
                sent += 1
                if status >= 500:
                    TALLY.saw_server_errors(1)
                assert status < 500, (str(op), member, repr(text), answer)
                if status >= 400:
                    assert headers["Content-Type"].startswith(PROBLEM)
    TALLY.tried("hostile-json", sent)
    assert sent >= 50


async def test_duplicated_keys_mean_the_last_one_everywhere(
    world: World, writes: list[Operation], http: aiohttp.ClientSession
) -> None:
    """RFC 8259 leaves duplicated names to the parser; the gateway (orjson) and chat (orjson)
    both take the last one, like browsers' JSON.parse, so no two parts of the mesh read one
    body two ways. A privileged key cannot hide behind a duplicate either."""
    me = f"{world.gateway}/api/v1/users/me"
    token = world.bob.access_token
    body = b'{"displayName":"first","displayName":"second"}'
    headers = {"Content-Type": "application/json"}
    status, _, answer = await call(http, "PATCH", me, token, data=body, headers=headers)
    assert (status, answer["displayName"]) == (200, "second")
    body = b'{"displayName":"Bob","roles":["admin"],"roles":["user"]}'
    status, _, problem = await call(http, "PATCH", me, token, data=body, headers=headers)
    assert status == 400
    assert [e["field"] for e in problem["errors"]] == ["roles"]
    status, _, room = await call(
        http,
        "POST",
        f"{world.gateway}/api/v1/chat/rooms",
        token,
        data=b'{"name":"first","name":"second","private":true,"private":false}',
        headers=headers,
    )
    assert (status, room["name"], room["private"]) == (201, "second", False)
    sent = 3
    for op in writes:  # and nowhere a 5xx
        member = _member(op)
        raw = f'{{"{member}":1,"{member}":"x","{member}":null}}'.encode()
        status, answer_headers, _ = await call(
            http, op.method, _url(world, op), _token(world, op), data=raw, headers=headers
        )
        sent += 1
        assert status < 500, (str(op), status)
        if status >= 400:
            assert answer_headers["Content-Type"].startswith(PROBLEM)
    TALLY.tried("hostile-json", sent)
