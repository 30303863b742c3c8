"""Who may touch what, tried on every route of the running mesh (OWASP API1, API2, API3,
API5, API7, API9).

Every route list comes from the live ``/openapi.json`` (`tests.resilience.inventory`): a new
route is attacked the day it appears, and a route with an ``{id}`` or a body that has no case
here fails the test that needs one, naming it. What each test covers:

- object level (API1): Bob against Alice's objects on every ``{id}`` route, ids in the body
  that disagree with the path, hostile ids;
- function level (API5): every signed-in route without a token, every admin route with a
  normal user's token (and identity headers a client could forge), then the same over gRPC
  straight to the services, which check again; nothing may have changed afterwards;
- object properties (API3): privileged fields added to every write (rejected, or ignored as
  read-only, and a read proves nothing changed), and no secret in any response;
- tokens (API2): forgeries beyond ``tests/e2e/test_auth_flow.py``, on every signed-in route
  and the WebSocket handshake;
- outbound calls (API7): token headers and request heads that name another host never make
  the mesh call it;
- inventory (API9): what is not documented does not answer.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import jwt
import orjson
import pytest
import pytest_asyncio
import yarl
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import message_factory

from gateway.upstreams import GRPC_SERVICES
from mesh.auth.access import ADMIN, PUBLIC, USER, method_access
from mesh.auth.keys import load_or_create_keys
from mesh.harness import free_port
from tests.e2e.client import PASSWORD, call, log_in
from tests.e2e.mesh_process import MeshProcess
from tests.resilience.inventory import Operation
from tests.resilience.tally import TALLY
from tests.resilience.world import World, new_product, product_body

PROBLEM = "application/problem+json"
ACCESS_NAMES: dict[int, str] = {PUBLIC: "public", USER: "user", ADMIN: "admin"}


def assert_problem(
    status: int, headers: Any, body: Any, expected: int | tuple[int, ...], what: object
) -> None:
    wanted = expected if isinstance(expected, tuple) else (expected,)
    if status >= 500:
        TALLY.saw_server_errors(1)
    assert status in wanted, (what, status, body)
    assert headers["Content-Type"].startswith(PROBLEM), (what, headers["Content-Type"])
    assert body["status"] == status, (what, body)


def object_id(world: World, op: Operation) -> str:
    """A real object for the ``{id}`` of `op` (Alice's where objects have owners)."""
    for prefix, value in (
        ("/api/v1/users/", world.alice.id),
        ("/api/v1/products/", world.product["id"]),
        ("/api/v1/reservations/", world.reservation["reservationId"]),
        ("/api/v1/chat/rooms/", world.private_room["id"]),
    ):
        if op.path.startswith(prefix):
            return value
    raise AssertionError(f"{op}: no object to point its {{id}} at; add one to object_id()")


def url_of(world: World, op: Operation, object_ref: str | None = None) -> str:
    values = {v: object_ref or object_id(world, op) for v in op.variables}
    return op.url(world.gateway, **values)


async def snapshot(http: aiohttp.ClientSession, world: World) -> dict[str, Any]:
    """What a stray write would change: the product, the accounts, Alice's rooms."""
    gw = world.gateway
    state: dict[str, Any] = {}
    state["product"] = (await call(http, "GET", f"{gw}/api/v1/products/{world.product['id']}"))[2]
    for name, account in (("alice", world.alice), ("bob", world.bob), ("admin", world.admin)):
        state[name] = (await call(http, "GET", f"{gw}/api/v1/users/me", account.access_token))[2]
    room = world.private_room["id"]
    state["history"] = (
        await call(http, "GET", f"{gw}/api/v1/chat/rooms/{room}/messages", world.alice.access_token)
    )[2]
    state["categories"] = (await call(http, "GET", f"{gw}/api/v1/categories"))[2]
    return state


# --- who may call what: documented, enforced at the gateway and again in the services ---


async def test_every_operation_documents_the_access_its_proto_declares(
    ops: list[Operation],
) -> None:
    declared = {
        f"{service.descriptor.full_name}.{method.name}": method_access(method)
        for service in GRPC_SERVICES
        for method in service.descriptor.methods
    }
    for op in ops:
        base = op.operation_id
        if base.rsplit(".", 1)[-1].isdigit():  # an additional binding: "<method>.<n>"
            base = base.rsplit(".", 1)[0]
        if base in declared:
            assert op.access == ACCESS_NAMES.get(declared[base], "closed"), op
        else:
            assert base.startswith(("chat.", "gateway.")), f"{op}: not from a proto, not known"
        assert (op.spec["security"] == []) == (op.access == "public"), op
    assert {op.access for op in ops} >= {"public", "user", "admin"}


async def test_anonymous_callers_get_401_on_every_signed_in_operation(
    ops: list[Operation], world: World, http: aiohttp.ClientSession
) -> None:
    before = await snapshot(http, world)
    tried = 0
    for op in ops:
        if op.access == "public":
            continue
        for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer"}):
            kwargs: dict[str, Any] = {"headers": headers}
            if op.has_body:
                kwargs["json"] = {}
            status, answer_headers, body = await call(http, op.method, url_of(world, op), **kwargs)
            tried += 1
            assert_problem(status, answer_headers, body, 401, op)
            assert answer_headers["WWW-Authenticate"].startswith("Bearer"), op
    TALLY.tried("bfla", tried)
    assert tried >= 10
    assert await snapshot(http, world) == before


# Valid requests for every admin operation: query parameters and body. With the admin's token
# each must succeed (so a 403 for a normal user is the access check, not a bad request).
AdminExample = Callable[[World], tuple[dict[str, str], dict[str, Any] | None]]
_RANGE = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
ADMIN_EXAMPLES: dict[str, AdminExample] = {
    "users.v1.UsersService.GetUser": lambda w: ({}, None),
    "users.v1.UsersService.ListUsers": lambda w: ({"pageSize": "5"}, None),
    "catalog.v1.CatalogService.CreateProduct": lambda w: (
        {},
        product_body(category=f"bfla-{uuid.uuid4().hex[:8]}"),
    ),
    "catalog.v1.CatalogService.UpdateProduct": lambda w: ({}, {"priceCents": 1, "stock": 0}),
    "catalog.v1.CatalogService.DeleteProduct": lambda w: ({}, None),
    "analytics.v1.AnalyticsService.CountEvents": lambda w: ({"type": "page.view", **_RANGE}, None),
    "analytics.v1.AnalyticsService.CountUniques": lambda w: (
        {"type": "page.view", **_RANGE},
        None,
    ),
    "analytics.v1.AnalyticsService.TopValues": lambda w: (
        {"type": "page.view", "property": "path", **_RANGE},
        None,
    ),
    "analytics.v1.AnalyticsService.Funnel": lambda w: (
        {"steps": "page.view,signup", "within": "1h", **_RANGE},
        None,
    ),
}

# Headers a client could send to claim another identity; the mesh takes the caller only
# from the verified token (and drops internal headers at the edge).
FORGED_IDENTITY = {
    "X-User-Id": "{admin}",
    "X-Mesh-User": "{admin}",
    "X-Mesh-Roles": "admin",
    "X-Roles": "admin",
    "X-Forwarded-User": "{admin}",
    "X-Auth-Request-User": "{admin}",
    "X-Client-Address": "127.0.0.1",
    "X-Original-URL": "/api/v1/users",
    "X-Rewrite-URL": "/api/v1/users",
    "X-HTTP-Method-Override": "GET",
}


async def test_normal_users_get_403_on_every_admin_operation_and_nothing_changes(
    ops: list[Operation], world: World, http: aiohttp.ClientSession
) -> None:
    admin_ops = [op for op in ops if op.access == "admin"]
    assert len(admin_ops) >= 5
    before = await snapshot(http, world)
    forged = {k: v.format(admin=world.admin.id) for k, v in FORGED_IDENTITY.items()}
    tried = 0
    for op in admin_ops:
        example = ADMIN_EXAMPLES.get(op.operation_id)
        if example is None:
            assert not op.is_write, f"{op}: add a valid request to ADMIN_EXAMPLES"
            query: dict[str, str] = {}
            body = None
        else:
            query, body = example(world)
        for headers in ({}, forged):
            status, answer_headers, problem = await call(
                http,
                op.method,
                url_of(world, op),
                world.bob.access_token,
                params=query,
                json=body,
                headers=headers,
            )
            tried += 1
            assert_problem(status, answer_headers, problem, 403, op)
            assert world.alice.email not in str(problem), op
    TALLY.tried("bfla", tried)
    assert await snapshot(http, world) == before
    # The same requests with the admin's token succeed: the examples are valid, so each 403
    # above was the access check (on throwaway objects, the world's stay as they are).
    for op in admin_ops:
        if op.operation_id not in ADMIN_EXAMPLES:
            continue
        target = object_id(world, op) if op.variables else ""
        if op.path.startswith("/api/v1/products/"):
            target = (await new_product(http, world.gateway, world.admin))["id"]
        query, body = ADMIN_EXAMPLES[op.operation_id](world)
        url = op.url(world.gateway, **dict.fromkeys(op.variables, target))
        status, _, answer = await call(
            http, op.method, url, world.admin.access_token, params=query, json=body
        )
        assert 200 <= status < 300, (op, status, answer)


async def test_a_method_override_header_does_not_open_another_method(
    world: World, http: aiohttp.ClientSession
) -> None:
    url = f"{world.gateway}/api/v1/products/{world.product['id']}"
    for header in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
        status, _, _ = await call(
            http, "GET", url, world.bob.access_token, headers={header: "DELETE"}
        )
        assert status == 200  # a GET, as sent
        status, _, _ = await call(
            http, "POST", url, world.bob.access_token, json={}, headers={header: "DELETE"}
        )
        assert status == 405
    TALLY.tried("bfla", 6)
    status, _, product = await call(http, "GET", url)
    assert (status, product["version"]) == (200, world.product["version"])


async def test_the_services_check_access_again_over_grpc(mesh: MeshProcess, world: World) -> None:
    """Straight to each service's gRPC port, past the gateway: a normal user's token is
    PERMISSION_DENIED on every admin method, no token or a forged one UNAUTHENTICATED on every
    signed-in method. The methods come from the protos the gateway serves."""
    alg_none = _unsigned({"alg": "none", "kid": _kid(mesh)}, _claims(world.bob.id, admin=True))
    tried = 0
    for service in GRPC_SERVICES:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports[service.upstream]}") as ch:
            for method in service.descriptor.methods:
                access = method_access(method)
                if access == PUBLIC or method.client_streaming or method.server_streaming:
                    continue
                request = message_factory.GetMessageClass(method.input_type)
                reply = message_factory.GetMessageClass(method.output_type)
                rpc = ch.unary_unary(
                    f"/{service.descriptor.full_name}/{method.name}",
                    request_serializer=request.SerializeToString,
                    response_deserializer=reply.FromString,
                )
                cases: list[tuple[str | None, grpc.StatusCode]] = [
                    (None, grpc.StatusCode.UNAUTHENTICATED),
                    (alg_none, grpc.StatusCode.UNAUTHENTICATED),
                ]
                if access == ADMIN:
                    cases.append((world.bob.access_token, grpc.StatusCode.PERMISSION_DENIED))
                for token, expected in cases:
                    metadata = (("authorization", f"Bearer {token}"),) if token else ()
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await rpc(request(), metadata=metadata, timeout=5)
                    tried += 1
                    assert raised.value.code() == expected, (method.full_name, token and "token")
    TALLY.tried("bfla", tried)
    assert tried >= 15


# --- object level: Bob against Alice's objects on every {id} route ---

BolaCase = Callable[[World, aiohttp.ClientSession], Awaitable[int]]


async def _bola_get_user(world: World, http: aiohttp.ClientSession) -> int:
    for target in (world.alice.id, world.bob.id):  # admin only, even one's own
        status, headers, body = await call(
            http, "GET", f"{world.gateway}/api/v1/users/{target}", world.bob.access_token
        )
        assert_problem(status, headers, body, 403, "GetUser")
        assert world.alice.email not in str(body)
    return 2


async def _bola_product(world: World, http: aiohttp.ClientSession) -> int:
    """Products belong to the shop, not to users: anyone reads them, only admins change them
    (Bob's attempts are 403 and change nothing), and a deleted one is gone for everybody."""
    url = f"{world.gateway}/api/v1/products/{world.product['id']}"
    for token in (None, world.bob.access_token):
        status, _, product = await call(http, "GET", url, token)
        assert status == 200
    for method, body in (("PATCH", {"priceCents": 1}), ("DELETE", None)):
        status, headers, problem = await call(http, method, url, world.bob.access_token, json=body)
        assert_problem(status, headers, problem, 403, f"{method} product")
    status, _, after = await call(http, "GET", url)
    assert after == product
    gone = await new_product(http, world.gateway, world.admin)
    gone_url = f"{world.gateway}/api/v1/products/{gone['id']}"
    status, _, _ = await call(http, "DELETE", gone_url, world.admin.access_token)
    assert status == 200
    for token in (None, world.bob.access_token, world.admin.access_token):
        status, headers, problem = await call(http, "GET", gone_url, token)
        assert_problem(status, headers, problem, 404, "deleted product")
        status, headers, problem = await call(
            http,
            "POST",
            f"{gone_url}:reserve",
            token or world.bob.access_token,
            json={"quantity": 1, "idempotencyKey": uuid.uuid4().hex},
        )
        assert_problem(status, headers, problem, 404, "reserve a deleted product")
    return 10


async def _bola_reserve(world: World, http: aiohttp.ClientSession) -> int:
    """Idempotency keys are per user: Bob reusing Alice's key gets his own reservation, not
    a replay of hers (which would hand him her reservation id)."""
    status, _, mine = await call(
        http,
        "POST",
        f"{world.gateway}/api/v1/products/{world.product['id']}:reserve",
        world.bob.access_token,
        json={"quantity": 2, "idempotencyKey": "alice-1"},  # Alice's key and body
    )
    assert status == 200, mine
    assert mine["reservationId"] != world.reservation["reservationId"]
    status, _, _ = await call(
        http,
        "POST",
        f"{world.gateway}/api/v1/reservations/{mine['reservationId']}:release",
        world.bob.access_token,
        json={},
    )
    assert status == 200
    return 1


async def _bola_release(world: World, http: aiohttp.ClientSession) -> int:
    """Bob cannot release Alice's reservation, by its path or by an id in the body."""
    product_url = f"{world.gateway}/api/v1/products/{world.product['id']}"
    status, _, hers = await call(
        http,
        "POST",
        f"{product_url}:reserve",
        world.alice.access_token,
        json={"quantity": 3, "idempotencyKey": uuid.uuid4().hex},
    )
    assert status == 200, hers
    status, _, his = await call(
        http,
        "POST",
        f"{product_url}:reserve",
        world.bob.access_token,
        json={"quantity": 1, "idempotencyKey": uuid.uuid4().hex},
    )
    assert status == 200, his
    stock = (await call(http, "GET", product_url))[2]["stock"]
    release = f"{world.gateway}/api/v1/reservations/{{}}:release"
    status, headers, problem = await call(
        http, "POST", release.format(hers["reservationId"]), world.bob.access_token, json={}
    )
    assert_problem(status, headers, problem, (403, 404), "release Alice's reservation")
    assert (await call(http, "GET", product_url))[2]["stock"] == stock
    # His own path with her id in the body: the path decides.
    status, _, released = await call(
        http,
        "POST",
        release.format(his["reservationId"]),
        world.bob.access_token,
        json={"id": hers["reservationId"]},
    )
    assert status == 200, released
    assert released["reservationId"] == his["reservationId"]
    assert (await call(http, "GET", product_url))[2]["stock"] == stock + 1
    status, _, released = await call(
        http, "POST", release.format(hers["reservationId"]), world.alice.access_token, json={}
    )
    assert (status, released["status"]) == (200, "released")  # hers was intact
    return 2


async def _bola_members(world: World, http: aiohttp.ClientSession) -> int:
    members = f"{world.gateway}/api/v1/chat/rooms/{{}}/members"
    private, public = world.private_room["id"], world.public_room["id"]
    for room, user in (
        (private, world.bob.id),
        (private, world.admin.id),
        (public, world.admin.id),
    ):
        status, headers, problem = await call(
            http, "POST", members.format(room), world.bob.access_token, json={"userId": user}
        )
        assert_problem(status, headers, problem, 403, ("add member", room, user))
    room = (await call(http, "GET", f"{world.gateway}/api/v1/chat/rooms/{private}/messages",
                       world.admin.access_token))  # fmt: skip
    assert room[0] == 403  # not even an admin reads a private room it is not in
    return 4


async def _bola_history(world: World, http: aiohttp.ClientSession) -> int:
    history = f"{world.gateway}/api/v1/chat/rooms/{world.private_room['id']}/messages"
    status, headers, problem = await call(http, "GET", history, world.bob.access_token)
    assert_problem(status, headers, problem, 403, "history of Alice's private room")
    assert "for Alice's eyes only" not in str(problem)
    status, _, page = await call(http, "GET", history, world.alice.access_token)
    assert status == 200
    assert [m["text"] for m in page["messages"]] == ["for Alice's eyes only"]
    seen: list[str] = []
    token = ""
    while True:  # Bob's list of rooms has Alice's public room, never her private one
        status, _, rooms = await call(
            http,
            "GET",
            f"{world.gateway}/api/v1/chat/rooms",
            world.bob.access_token,
            params={"pageSize": "100", **({"pageToken": token} if token else {})},
        )
        assert status == 200
        seen += [r["id"] for r in rooms["rooms"]]
        token = rooms.get("nextPageToken", "")
        if not token:
            break
    assert world.public_room["id"] in seen
    assert world.private_room["id"] not in seen
    return 2


BOLA_CASES: dict[str, BolaCase] = {
    "users.v1.UsersService.GetUser": _bola_get_user,
    "catalog.v1.CatalogService.GetProduct": _bola_product,
    "catalog.v1.CatalogService.UpdateProduct": _bola_product,
    "catalog.v1.CatalogService.DeleteProduct": _bola_product,
    "catalog.v1.CatalogService.ReserveProduct": _bola_reserve,
    "catalog.v1.CatalogService.ReleaseReservation": _bola_release,
    "chat.AddMember": _bola_members,
    "chat.History": _bola_history,
}

HOSTILE_IDS = (
    str(uuid.uuid4()),
    "0",
    "-1",
    "..",
    "../users",
    "' OR '1'='1",
    '{"$ne": null}',
    "$where",
    "a" * 2000,
    "%00",
    "\u202e\u0000",
    "ümlaut-ø",
)


async def test_bob_reaches_none_of_alices_objects_on_any_id_route(
    ops: list[Operation], world: World, http: aiohttp.ClientSession
) -> None:
    id_ops = [op for op in ops if op.variables]
    assert len(id_ops) >= 6
    missing = [str(op) for op in id_ops if op.operation_id not in BOLA_CASES]
    assert not missing, f"no object-level case for {missing}: add one to BOLA_CASES"
    tried = 0
    for case in dict.fromkeys(BOLA_CASES[op.operation_id] for op in id_ops):
        tried += await case(world, http)
    # Ids that name nothing (or try to name everything): a 4xx, never someone else's object.
    for op in id_ops:
        token = world.bob.access_token if op.access != "admin" else world.admin.access_token
        for hostile in HOSTILE_IDS:
            status, headers, body = await call(
                http,
                op.method,
                url_of(world, op, hostile),
                token,
                json={"quantity": 1, "idempotencyKey": uuid.uuid4().hex}
                if op.operation_id.endswith("ReserveProduct")
                else ({"userId": world.bob.id} if op.has_body else None),
            )
            tried += 1
            assert_problem(status, headers, body, (400, 403, 404), (op, hostile))
    TALLY.tried("bola", tried)


# --- object properties: mass assignment on every write, no secrets in any answer ---


@dataclass
class WriteExample:
    token: str | None
    values: dict[str, str]  # path variables
    body: dict[str, Any]
    read: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
    into: str | None = None  # inject into the first item of this array member too
    path_wins: str | None = None  # another object's id to put in the body under the path's name
    check_path_wins: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


PRIVILEGED: dict[str, Any] = {
    "roles": ["user", "admin"],
    "role": "admin",
    "isAdmin": True,
    "admin": True,
    "id": "00000000-0000-4000-8000-0000000000aa",
    "userId": "00000000-0000-4000-8000-0000000000bb",
    "ownerId": "00000000-0000-4000-8000-0000000000bb",
    "owner": "00000000-0000-4000-8000-0000000000bb",
    "createdAt": "2000-01-01T00:00:00Z",
    "updatedAt": "2000-01-01T00:00:00Z",
    "version": "999",
    "email": "mallory@example.org",
    "passwordHash": "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA",
    "status": "released",
    "remainingStock": 1000000,
    "receivedAt": "2000-01-01T00:00:00Z",
    "__proto__": {"admin": True},
}

WriteFactory = Callable[[World, aiohttp.ClientSession], Awaitable[WriteExample]]


async def _register(world: World, http: aiohttp.ClientSession) -> WriteExample:
    email = f"m{uuid.uuid4().hex[:12]}@example.org"

    async def read(answer: dict[str, Any]) -> dict[str, Any]:
        tokens = await log_in(http, world.gateway, email)
        me = (await call(http, "GET", f"{world.gateway}/api/v1/users/me", tokens["accessToken"]))[2]
        claims = jwt.decode(tokens["accessToken"], options={"verify_signature": False})
        return {**me, "tokenRoles": claims["roles"]}

    body = {"email": email, "password": PASSWORD, "displayName": "Mallory"}
    return WriteExample(None, {}, body, read)


async def _login(world: World, http: aiohttp.ClientSession) -> WriteExample:
    # An unknown email: a rejected field is a 400; were it passed on, the answer would be 401.
    body = {"email": f"nobody-{uuid.uuid4().hex}@example.org", "password": PASSWORD}
    return WriteExample(None, {}, body)


async def _spent_refresh(world: World, http: aiohttp.ClientSession) -> WriteExample:
    return WriteExample(None, {}, {"refreshToken": "x" * 43})


async def _update_me(world: World, http: aiohttp.ClientSession) -> WriteExample:
    async def read(answer: dict[str, Any]) -> dict[str, Any]:
        status, _, me = await call(
            http, "GET", f"{world.gateway}/api/v1/users/me", world.bob.access_token
        )
        assert status == 200
        return dict(me)

    return WriteExample(world.bob.access_token, {}, {"displayName": "Bob"}, read)


def _product_reader(
    world: World, http: aiohttp.ClientSession
) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    async def read(answer: dict[str, Any]) -> dict[str, Any]:
        status, _, product = await call(
            http, "GET", f"{world.gateway}/api/v1/products/{answer['id']}"
        )
        assert status == 200, product
        return dict(product)

    return read


async def _create_product(world: World, http: aiohttp.ClientSession) -> WriteExample:
    read = _product_reader(world, http)
    return WriteExample(world.admin.access_token, {}, product_body(), read)


async def _update_product(world: World, http: aiohttp.ClientSession) -> WriteExample:
    target = await new_product(http, world.gateway, world.admin)

    async def other_unchanged(answer: dict[str, Any]) -> None:
        assert answer["id"] == target["id"]
        _, _, product = await call(
            http, "GET", f"{world.gateway}/api/v1/products/{world.product['id']}"
        )
        assert product["name"] == world.product["name"], "the body's id was obeyed"

    return WriteExample(
        world.admin.access_token,
        {"id": target["id"]},
        {"name": "Renamed"},
        _product_reader(world, http),
        path_wins=world.product["id"],
        check_path_wins=other_unchanged,
    )


async def _reserve(world: World, http: aiohttp.ClientSession) -> WriteExample:
    other = await new_product(http, world.gateway, world.admin, stock=7)

    async def path_product(answer: dict[str, Any]) -> None:
        assert answer["productId"] == world.product["id"], "the body's id was obeyed"
        _, _, product = await call(http, "GET", f"{world.gateway}/api/v1/products/{other['id']}")
        assert product["stock"] == 7

    return WriteExample(
        world.bob.access_token,
        {"id": world.product["id"]},
        {"quantity": 1, "idempotencyKey": uuid.uuid4().hex},
        path_wins=other["id"],
        check_path_wins=path_product,
    )


async def _release(world: World, http: aiohttp.ClientSession) -> WriteExample:
    status, _, mine = await call(
        http,
        "POST",
        f"{world.gateway}/api/v1/products/{world.product['id']}:reserve",
        world.bob.access_token,
        json={"quantity": 1, "idempotencyKey": uuid.uuid4().hex},
    )
    assert status == 200, mine

    async def path_reservation(answer: dict[str, Any]) -> None:
        assert answer["reservationId"] == mine["reservationId"], "the body's id was obeyed"

    return WriteExample(
        world.bob.access_token,
        {"id": mine["reservationId"]},
        {},
        path_wins=world.reservation["reservationId"],
        check_path_wins=path_reservation,
    )


async def _ingest(world: World, http: aiohttp.ClientSession) -> WriteExample:
    event = {"eventId": str(uuid.uuid4()), "type": "page.view", "timestamp": "2026-11-20T08:00:00Z"}
    return WriteExample(world.bob.access_token, {}, {"events": [event]}, into="events")


async def _create_room(world: World, http: aiohttp.ClientSession) -> WriteExample:
    return WriteExample(world.bob.access_token, {}, {"name": "mass assignment"})


async def _add_member(world: World, http: aiohttp.ClientSession) -> WriteExample:
    return WriteExample(
        world.alice.access_token, {"id": world.public_room["id"]}, {"userId": world.bob.id}
    )


WRITE_CASES: dict[str, WriteFactory] = {
    "users.v1.UsersService.Register": _register,
    "users.v1.UsersService.Login": _login,
    "users.v1.UsersService.Refresh": _spent_refresh,
    "users.v1.UsersService.Logout": _spent_refresh,
    "users.v1.UsersService.UpdateMe": _update_me,
    "catalog.v1.CatalogService.CreateProduct": _create_product,
    "catalog.v1.CatalogService.UpdateProduct": _update_product,
    "catalog.v1.CatalogService.ReserveProduct": _reserve,
    "catalog.v1.CatalogService.ReleaseReservation": _release,
    "analytics.v1.AnalyticsService.IngestEvents": _ingest,
    "chat.CreateRoom": _create_room,
    "chat.AddMember": _add_member,
}


def _named(problem: Any, name: str) -> bool:
    return any(e["field"] == name or e["field"].endswith(f".{name}") for e in problem["errors"])


async def test_privileged_fields_in_every_write_are_rejected_or_ignored(
    ops: list[Operation], world: World, http: aiohttp.ClientSession
) -> None:
    """Each privileged field added to a valid body: a 400 naming it when the body has no such
    member, or - for a read-only member (AIP-203: output only fields in a request are
    ignored) - a success whose answer and a later read both show the server's value."""
    writes = [op for op in ops if op.has_body]
    missing = [str(op) for op in writes if op.operation_id not in WRITE_CASES]
    assert not missing, f"no mass-assignment case for {missing}: add one to WRITE_CASES"
    tried = 0
    for op in writes:
        properties = op.body_properties()
        example = await WRITE_CASES[op.operation_id](world, http)
        targets: list[tuple[str | None, dict[str, Any]]] = [(None, properties)]
        if example.into:
            items = properties[example.into]["items"]
            targets.append((example.into, op.resolve(items).get("properties", {})))
        for into, members in targets:
            for name, value in PRIVILEGED.items():
                member = members.get(name)
                if member is not None and not Operation.read_only(member):
                    continue  # a field this write takes: not privileged here
                example = await WRITE_CASES[op.operation_id](world, http)
                body = orjson.loads(orjson.dumps(example.body))
                (body[into][0] if into else body)[name] = value
                url = op.url(world.gateway, **example.values)
                status, headers, answer = await call(http, op.method, url, example.token, json=body)
                tried += 1
                what = (str(op), into, name)
                if member is None:
                    assert_problem(status, headers, answer, 400, what)
                    assert _named(answer, name), (what, answer)
                    continue
                if status == 400:
                    assert _named(answer, name), (what, answer)
                    continue
                assert 200 <= status < 300, (what, status, answer)
                assert answer.get(name) != value, what
                if example.read is not None:
                    assert (await example.read(answer)).get(name) != value, what
        if example.path_wins is not None:  # an id in the body that disagrees with the path
            example = await WRITE_CASES[op.operation_id](world, http)
            [variable] = op.variables
            body = {**example.body, variable: example.path_wins}
            url = op.url(world.gateway, **example.values)
            status, _, answer = await call(http, op.method, url, example.token, json=body)
            tried += 1
            assert 200 <= status < 300, (str(op), status, answer)
            assert example.check_path_wins is not None
            await example.check_path_wins(answer)
    TALLY.tried("mass-assignment", tried)
    assert tried >= 100


SECRET_WORDS = ("password", "hash", "secret", "salt", "privatekey", "signingkey")
TOKEN_MEMBERS = {"accessToken", "refreshToken"}
TOKEN_ISSUERS = {"users.v1.UsersService.Login", "users.v1.UsersService.Refresh"}


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _schema_members(op: Operation, schema: dict[str, Any], seen: set[str]) -> set[str]:
    ref = schema.get("$ref")
    if ref is not None:
        if ref in seen:
            return set()
        seen.add(ref)
    schema = op.resolve(schema)
    names = set(schema.get("properties", {}))
    children = [*schema.get("properties", {}).values()]
    children += [schema[k] for k in ("items", "additionalProperties") if k in schema]
    children += [s for k in ("anyOf", "oneOf", "allOf") for s in schema.get(k, [])]
    for child in children:
        if isinstance(child, dict) and child:
            names |= _schema_members(op, child, seen)
    return names


async def test_no_answer_carries_a_secret(
    ops: list[Operation], world: World, http: aiohttp.ClientSession
) -> None:
    """No documented response has a password, hash, key or secret member (tokens only from
    login and refresh), and real answers about accounts hold no more than documented."""
    for op in ops:
        for response in op.spec["responses"].values():
            for content in response.get("content", {}).values():
                members = _schema_members(op, content.get("schema", {}), set())
                lowered = {m.lower() for m in members}
                assert not {m for m in lowered for w in SECRET_WORDS if w in m}, (op, members)
                if op.operation_id not in TOKEN_ISSUERS:
                    assert not members & TOKEN_MEMBERS, (op, members)
    gw = world.gateway
    admin = world.admin.access_token
    answers = [
        (await call(http, "GET", f"{gw}/api/v1/users/me", world.bob.access_token))[2],
        (await call(http, "GET", f"{gw}/api/v1/users/{world.alice.id}", admin))[2],
        (await call(http, "GET", f"{gw}/api/v1/users", admin, params={"pageSize": "100"}))[2],
        (await call(http, "GET", f"{gw}/.well-known/jwks.json"))[2],
    ]
    for answer in answers:
        keys = {k.lower() for k in _keys(answer)}
        assert not {k for k in keys for w in SECRET_WORDS if w in k}, answer
    assert "d" not in _keys(answers[-1]), "a private JWK member"
    user_members = {"id", "email", "displayName", "roles", "createdAt"}
    assert set(answers[1]) <= user_members, answers[1]
    assert all(set(u) <= user_members for u in answers[2]["users"])
    TALLY.tried("exposure", len(ops) + len(answers))


# --- tokens: forgeries beyond the basics, on every signed-in route and the WebSocket ---


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _kid(mesh: MeshProcess) -> str:
    return load_or_create_keys(Path(mesh.env["MESH_DATA_DIR"]) / "keys")[-1].kid


def _claims(sub: str, *, admin: bool = False, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "the-mesh",
        "aud": "mesh-api",
        "sub": sub,
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "roles": ["user", "admin"] if admin else ["user"],
        **changes,
    }
    return {k: v for k, v in claims.items() if v is not None}


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}.{signature}"


def forgeries(mesh: MeshProcess, world: World, listener: str) -> dict[str, str]:
    """Tokens that must all be refused. tests/e2e/test_auth_flow.py has alg none, HS256 with
    the public key, expired, wrong aud/iss, missing exp, a tampered signature, a refresh token
    and garbage; these are the rest."""
    key = load_or_create_keys(Path(mesh.env["MESH_DATA_DIR"]) / "keys")[-1]
    attacker = Ed25519PrivateKey.generate()
    attacker_jwk = orjson.loads(jwt.algorithms.OKPAlgorithm.to_jwk(attacker.public_key()))
    claims = _claims(world.bob.id, admin=True)

    def ours(headers: dict[str, Any] | None = None, **changes: Any) -> str:
        """Signed with the mesh's own key (by hand: PyJWT refuses to make some of these)."""
        header = {"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid, **(headers or {})}
        signing_input = _unsigned(header, {**_claims(world.bob.id, admin=True), **changes})[:-1]
        return f"{signing_input}.{_b64(key.private.sign(signing_input.encode()))}"

    def theirs(headers: dict[str, Any]) -> str:
        return jwt.encode(claims, attacker, algorithm="EdDSA", headers=headers)

    alice_head, _, alice_signature = world.alice.access_token.split(".")
    raised = _b64(orjson.dumps(_claims(world.alice.id, admin=True)))
    return {
        "unknown kid": ours({"kid": "no-such-key"}),
        "kid path traversal": ours({"kid": "../../../../../../dev/null"}),
        "kid SQL injection": ours({"kid": "x' UNION SELECT 'AAAA' --"}),
        "kid of 4 KiB": ours({"kid": "k" * 4096}),
        "kid a number": ours({"kid": 7}),
        "kid null": ours({"kid": None}),
        "kid an object": ours({"kid": {"kid": key.kid}}),
        "alg None": _unsigned({"alg": "None", "kid": key.kid}, claims),
        "alg NONE": _unsigned({"alg": "NONE", "kid": key.kid}, claims),
        "alg nOnE": _unsigned({"alg": "nOnE", "kid": key.kid}, claims),
        "EdDSA without a signature": _unsigned({"alg": "EdDSA", "kid": key.kid}, claims),
        "ES256 header on an EdDSA signature": _unsigned(
            {"alg": "ES256", "kid": key.kid}, claims, ours().split(".")[2]
        ),
        "attacker key, our kid": theirs({"kid": key.kid}),
        "attacker key embedded as jwk": theirs({"kid": "attacker", "jwk": attacker_jwk}),
        "attacker key embedded as jwk, our kid": theirs({"kid": key.kid, "jwk": attacker_jwk}),
        "jku to the attacker's key set": theirs(
            {"kid": "attacker", "jku": f"{listener}/jwks.json"}
        ),
        "x5u to the attacker's certificate": theirs({"kid": "attacker", "x5u": f"{listener}/c"}),
        "unknown critical header": ours({"crit": ["mesh-ext"], "mesh-ext": True}),
        "nbf in the future": ours(nbf=int(time.time()) + 3600),
        "iat in the future": ours(iat=int(time.time()) + 3600),
        "sub a number": ours(sub=12345),
        "roles a string": ours(roles="admin"),
        "aud not ours": ours(aud=["another-api"]),
        "Alice's signature on raised roles": f"{alice_head}.{raised}.{alice_signature}",
        "two segments": ".".join(ours().split(".")[:2]),
        "four segments": ours() + ".AAAA",
        "non-ASCII": "é" * 40,
        "7 KiB of base64": "A" * 7000 + ".B.C",
    }


@pytest_asyncio.fixture
async def listener() -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP server that records every request: where a forgery points the mesh to."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(f"{request.method} {request.path_qs}")
        return web.json_response({"keys": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


async def test_forged_tokens_are_401_on_every_signed_in_route_and_the_websocket(
    mesh: MeshProcess,
    ops: list[Operation],
    world: World,
    http: aiohttp.ClientSession,
    listener: tuple[str, list[str]],
) -> None:
    base, hits = listener
    tokens = forgeries(mesh, world, base)
    signed_in = [op for op in ops if op.access != "public"]
    tried = 0
    for case, token in tokens.items():
        for op in signed_in:
            status, headers, problem = await call(
                http,
                op.method,
                url_of(world, op),
                token,
                json={} if op.has_body else None,
            )
            tried += 1
            assert_problem(status, headers, problem, 401, (case, str(op)))
            assert headers["WWW-Authenticate"].startswith("Bearer"), (case, str(op))
        ws = world.gateway.replace("http://", "ws://") + "/ws/chat"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws, headers={"Authorization": f"Bearer {token}"})
        assert refused.value.status == 401, case
        tried += 1
    TALLY.tried("forgery", tried)
    await asyncio.sleep(0.5)  # anything the mesh was tricked into fetching has arrived
    assert hits == [], "a token header made the mesh call out"


async def test_tokens_count_only_in_the_authorization_header(
    world: World, http: aiohttp.ClientSession
) -> None:
    """A valid token in the URL (it would end in logs and Referer headers) or in a cookie
    (CSRF) does not sign anyone in."""
    me = f"{world.gateway}/api/v1/users/me"
    good = world.alice.access_token
    for params in ({"access_token": good}, {"token": good}, {"authorization": f"Bearer {good}"}):
        status, _, _ = await call(http, "GET", me, params=params)
        assert status in (400, 401), params
    for cookie in (f"access_token={good}", f"Authorization=Bearer {good}", f"token={good}"):
        status, _, _ = await call(http, "GET", me, headers={"Cookie": cookie})
        assert status == 401, cookie
    TALLY.tried("forgery", 6)


async def test_a_validly_signed_token_of_nobody_reads_no_account(
    mesh: MeshProcess, world: World, http: aiohttp.ClientSession
) -> None:
    key = load_or_create_keys(Path(mesh.env["MESH_DATA_DIR"]) / "keys")[-1]
    ghost = jwt.encode(
        _claims(str(uuid.uuid4())), key.private, algorithm="EdDSA", headers={"kid": key.kid}
    )
    status, headers, problem = await call(http, "GET", f"{world.gateway}/api/v1/users/me", ghost)
    assert_problem(status, headers, problem, (401, 404), "token of a user that does not exist")
    status, _, _ = await call(
        http, "PATCH", f"{world.gateway}/api/v1/users/me", ghost, json={"displayName": "Ghost"}
    )
    assert status in (401, 404)
    TALLY.tried("forgery", 2)


# --- outbound calls (SSRF) and the inventory ---


async def _raw(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_no_request_makes_the_mesh_call_a_host_it_names(
    mesh: MeshProcess, world: World, http: aiohttp.ClientSession, listener: tuple[str, list[str]]
) -> None:
    base, hits = listener
    target = yarl.URL(base)
    token = world.alice.access_token
    gateway_port = mesh.ports["gateway"]
    tried = 0
    for path in ("/api/v1/chat/rooms", "/api/v1/users/me", "/health"):
        for headers in (
            {"Host": f"{target.host}:{target.port}"},
            {"X-Forwarded-Host": f"{target.host}:{target.port}"},
            {"Forwarded": f"host={target.host}:{target.port};proto=http"},
            {"X-Original-URL": base + "/x", "X-Rewrite-URL": base + "/x"},
        ):
            status, _, _ = await call(http, "GET", world.gateway + path, token, headers=headers)
            tried += 1
            assert status < 500, (path, headers)
        answer = await _raw(
            gateway_port,
            f"GET {base}{path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
            f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode(),
        )
        tried += 1
        assert not answer.startswith(b"HTTP/1.1 5"), answer[:200]
    TALLY.tried("ssrf", tried)
    await asyncio.sleep(0.3)
    assert hits == [], "a request head made the mesh call the host it named"


UNDOCUMENTED = (
    "/api/v2/users",
    "/api/v1/admin",
    "/api/v1/users/me/roles",
    "/api/v1/internal/config",
    "/api/v1/chat/admin",
    "/metrics",
    "/debug/vars",
    "/debug/pprof",
    "/server-status",
    "/actuator/health",
    "/.env",
    "/.git/config",
    "/health/ready",
    "/api/v1/products/x/y",
)
# Dot segments in the chat proxy's path would leave /api/v1/chat/ at chat, reaching routes it
# does not publish (its /health/ready, /ws/chat): raw, as a client that does not normalise.
TRAVERSALS = (
    "/api/v1/chat/../../../health/ready",
    "/api/v1/chat/%2e%2e/%2e%2e/%2e%2e/health/ready",
    "/api/v1/chat/rooms/%2E%2E/%2E%2E/%2E%2E/%2E%2E/ws/chat",
    "/api/v1/chat/./rooms",
)


async def test_only_documented_routes_and_methods_answer(
    mesh: MeshProcess, ops: list[Operation], world: World, http: aiohttp.ClientSession
) -> None:
    token = world.admin.access_token
    tried = 0
    for path in UNDOCUMENTED:
        status, headers, problem = await call(http, "GET", world.gateway + path, token)
        tried += 1
        assert_problem(status, headers, problem, (403, 404), path)
        assert headers["Server"] == "mesh", headers["Server"]  # no versions to fingerprint
    for path in TRAVERSALS:
        answer = await _raw(
            mesh.ports["gateway"],
            f"GET {path} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {token}\r\n"
            f"Connection: close\r\n\r\n".encode(),
        )
        tried += 1
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith((b"HTTP/1.1 400", b"HTTP/1.1 404")), (path, answer[:300])
        assert b'"status":"ready"' not in body, path
    documented: dict[str, set[str]] = {}
    for op in ops:
        documented.setdefault(op.path, set()).add(op.method)
    for path, methods in documented.items():
        op = next(o for o in ops if o.path == path)
        url = url_of(world, op)
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - methods):
            status, headers, problem = await call(http, method, url, token, json={})
            tried += 1
            assert_problem(status, headers, problem, 405, (method, path))
            allowed = {m.strip() for m in headers["Allow"].split(",")}
            assert allowed <= methods | {"HEAD", "OPTIONS"}, (path, allowed)
    TALLY.tried("inventory", tried)
