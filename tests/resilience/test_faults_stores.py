"""Faults between the services and their stores (issue 11): PostgreSQL connections reset in
the middle of transactions, Redis black-holed for 10 s under load.

Both run against one mesh (`faulty`: `mesh up` with a fault proxy on every link) and check
the stores themselves afterwards, straight through the real servers (not through a proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mesh.harness import BackingUrls
from mesh.settings import with_database
from tests.e2e.client import PASSWORD, Account, call, mesh_cli, new_account
from tests.resilience.faultproxy import BlackHole
from tests.resilience.stack import FaultyMesh
from tests.resilience.tally import TALLY

LOAD_SECONDS = 4.0
RESET_EVERY = 0.25


def database(backing: BackingUrls, faulty: FaultyMesh, service: str) -> str:
    return with_database(backing.postgres_dsn, f"{faulty.mesh.env['MESH_NAMESPACE']}{service}")


@pytest_asyncio.fixture
async def users_db(backing: BackingUrls, faulty: FaultyMesh) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database(backing, faulty, "users"))
    yield connection
    await connection.close()


@pytest_asyncio.fixture
async def catalog_db(backing: BackingUrls, faulty: FaultyMesh) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database(backing, faulty, "catalog"))
    yield connection
    await connection.close()


@dataclass
class Outcomes:
    registrations: list[tuple[str, int, Any]] = field(default_factory=list)  # email, status, body
    reservations: list[tuple[str, str, int, Any]] = field(
        default_factory=list
    )  # key, product, status, body
    statuses: Counter[int] = field(default_factory=Counter)


async def _register(http: aiohttp.ClientSession, gateway: str, out: Outcomes) -> None:
    email = f"r{uuid.uuid4().hex[:12]}@example.org"
    body = {"email": email, "password": PASSWORD, "displayName": "Reset"}
    status, _, answer = await call(http, "POST", f"{gateway}/api/v1/auth/register", json=body)
    out.registrations.append((email, status, answer))
    out.statuses[status] += 1


async def _reserve(
    http: aiohttp.ClientSession, gateway: str, account: Account, product: str, out: Outcomes
) -> None:
    key = uuid.uuid4().hex
    status, _, answer = await call(
        http,
        "POST",
        f"{gateway}/api/v1/products/{product}:reserve",
        account.access_token,
        json={"quantity": 1, "idempotencyKey": key},
    )
    out.reservations.append((key, product, status, answer))
    out.statuses[status] += 1


async def _served(
    http: aiohttp.ClientSession, method: str, url: str, token: str | None = None, **kw: Any
) -> tuple[int, Any]:
    """A call retried while it gets 503 (an open breaker), for up to 20 s."""
    give_up = time.monotonic() + 20
    while True:
        status, _, answer = await call(http, method, url, token, **kw)
        if status != 503 or time.monotonic() > give_up:
            return status, answer
        await asyncio.sleep(0.25)


async def _until(deadline: float, work: Any) -> None:
    while time.monotonic() < deadline:
        await work()


async def test_postgres_reset_mid_transaction_leaves_no_partial_write(
    faulty: FaultyMesh,
    http: aiohttp.ClientSession,
    users_db: asyncpg.Connection,
    catalog_db: asyncpg.Connection,
) -> None:
    pg = faulty.links["postgres"]
    code, output = await mesh_cli(faulty.mesh, "seed", "--count", "40")
    assert code == 0, output
    stock = {
        str(row["id"]): row["stock"]
        for row in await catalog_db.fetch(
            "SELECT id, stock FROM products WHERE deleted_at IS NULL AND stock >= 100"
        )
    }
    products = sorted(stock)[:4]
    assert products, "the seed made no product with stock to reserve"
    account = await new_account(faulty.mesh, http)
    out = Outcomes()
    resets_before = pg.stats.resets
    deadline = time.monotonic() + LOAD_SECONDS

    async def resetter() -> int:
        times = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(RESET_EVERY)
            pg.reset_all()
            times += 1
        return times

    workers = [
        *(_until(deadline, lambda: _register(http, faulty.gateway, out)) for _ in range(3)),
        *(
            _until(
                deadline,
                lambda p=product: _reserve(http, faulty.gateway, account, p, out),
            )
            for product in products
            for _ in range(2)
        ),
    ]
    started = time.monotonic()
    resetting = asyncio.create_task(resetter())
    await asyncio.gather(*workers)
    reset_rounds = await resetting
    elapsed = time.monotonic() - started
    resets = pg.stats.resets - resets_before
    sent = len(out.registrations) + len(out.reservations)
    TALLY.tried("pg-reset writes", sent)
    print(
        f"\npg reset: {sent} writes in {elapsed:.1f} s ({len(out.registrations)} registrations,"
        f" {len(out.reservations)} reservations), {reset_rounds} reset rounds, {resets}"
        f" connections reset; statuses {dict(out.statuses)}"
    )
    assert resets > 0, "no PostgreSQL connection was reset: the fault was not injected"
    failed = sum(n for status, n in out.statuses.items() if status != 200)
    assert failed > 0, "no write failed: the resets never hit a transaction"
    assert out.statuses[200] > 0, "no write succeeded between the resets"
    errors = {status: n for status, n in out.statuses.items() if status >= 500}
    TALLY.saw_server_errors(out.statuses[500])
    # A lost connection is the store being unavailable (503, retry), never an internal error.
    assert set(errors) <= {503}, f"unexpected statuses: {dict(out.statuses)}"

    # Registrations: each acknowledged account exists with its event; a failed one is either
    # absent or (the reset hit between COMMIT and its answer) complete, never half there.
    users = {
        row["email"]: str(row["id"]) for row in await users_db.fetch("SELECT id, email FROM users")
    }
    registered = {
        row["subject"]: row["cnt"]
        for row in await users_db.fetch(
            "SELECT subject, count(*) AS cnt FROM outbox WHERE type = 'user.registered'"
            " GROUP BY subject"
        )
    }
    lost = 0
    committed_unanswered = 0
    for email, status, answer in out.registrations:
        if status == 200:
            if users.get(email) != answer["id"]:
                lost += 1
        elif email in users:
            committed_unanswered += 1
    assert registered == dict.fromkeys(users.values(), 1), "users and their outbox rows differ"

    # Reservations: the same, and the stock agrees with what was taken.
    reservations = {
        row["idempotency_key"]: (str(row["id"]), str(row["product_id"]), row["quantity"])
        for row in await catalog_db.fetch(
            "SELECT id, product_id, quantity, idempotency_key FROM reservations WHERE user_id = $1",
            account.id,
        )
    }
    reserved_events = {
        row["rid"]: row["cnt"]
        for row in await catalog_db.fetch(
            "SELECT payload->>'reservationId' AS rid, count(*) AS cnt FROM outbox"
            " WHERE type = 'inventory.reserved' GROUP BY 1"
        )
    }
    for key, _, status, answer in out.reservations:
        if status == 200:
            if key not in reservations or reservations[key][0] != answer["reservationId"]:
                lost += 1
        elif key in reservations:
            committed_unanswered += 1
    assert reserved_events == {r[0]: 1 for r in reservations.values()}, (
        "reservations and their outbox rows differ"
    )
    now = {
        str(row["id"]): row["stock"]
        for row in await catalog_db.fetch(
            "SELECT id, stock FROM products WHERE id = ANY($1::uuid[])", products
        )
    }
    taken = Counter[str]()
    for _, product, quantity in reservations.values():
        taken[product] += quantity
    assert now == {p: stock[p] - taken[p] for p in products}, "stock and reservations differ"

    # A failed reservation retried with its key (after the fault, once the breaker the
    # failures opened lets calls through again) is made exactly once.
    for key, product, status, _ in out.reservations:
        if status != 200:
            status, answer = await _served(
                http,
                "POST",
                f"{faulty.gateway}/api/v1/products/{product}:reserve",
                account.access_token,
                json={"quantity": 1, "idempotencyKey": key},
            )
            assert status in (200, 409), answer  # 409: out of stock (nothing made)
    retried = await catalog_db.fetch(
        "SELECT idempotency_key FROM reservations WHERE user_id = $1", account.id
    )
    keys = [row["idempotency_key"] for row in retried]
    assert len(keys) == len(set(keys))
    assert {k for k, _, status, _ in out.reservations if status == 200} <= set(keys)

    # The relay publishes every outbox row once PostgreSQL is back.
    pending = -1
    for _ in range(100):
        pending = await users_db.fetchval(
            "SELECT count(*) FROM outbox WHERE relayed_at IS NULL"
        ) + await catalog_db.fetchval("SELECT count(*) FROM outbox WHERE relayed_at IS NULL")
        if pending == 0:
            break
        await asyncio.sleep(0.2)
    assert pending == 0, "outbox rows were never relayed after the resets"

    print(
        f"pg reset: {lost} acknowledged writes lost; {committed_unanswered} committed writes"
        " answered as failed (the reset fell between COMMIT and the answer)"
    )
    TALLY.saw_lost(lost)
    assert lost == 0
    TALLY.fault_survived("postgres reset mid-transaction", reset_rounds)


# ---- Redis black-holed for 10 s under load ----

OUTAGE_SECONDS = 10.0
CHAT_EVERY = 0.25  # one message per 0.25 s: within the chat rate limit of 10 frames/s


@dataclass
class ChatListener:
    """The `message` frames one WebSocket receives, with the monotonic time of each."""

    name: str
    seen: list[tuple[int, str, float]] = field(default_factory=list)  # seq, clientMsgId, at
    acks: dict[str, tuple[int, float]] = field(default_factory=dict)  # clientMsgId -> seq, at
    errors: list[dict[str, Any]] = field(default_factory=list)

    async def read(self, socket: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in socket:
                frame = orjson.loads(data)
                now = time.monotonic()
                if frame["type"] == "message":
                    self.seen.append((frame["seq"], frame["clientMsgId"], now))
                elif frame["type"] == "ack":
                    self.acks[frame["clientMsgId"]] = (frame["seq"], now)
                elif frame["type"] == "error":
                    self.errors.append(frame)


async def _joined(socket: ClientConnection, room: str) -> None:
    await socket.send(orjson.dumps({"type": "join", "room": room}).decode())
    while True:
        frame = orjson.loads(await asyncio.wait_for(socket.recv(), 10))
        if frame["type"] == "joined":
            return
        assert frame["type"] in ("presence", "typing"), frame


async def _metric(http: aiohttp.ClientSession, port: int, name: str) -> float:
    """The sum of a metric's samples on an ops port's /metrics."""
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and (line[len(name)] in " {")
    )


async def _within(seconds: float, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


def _local_lag(sent: ChatListener, here: ChatListener, start: float, end: float) -> str:
    """The worst send->delivery lag on the sender's replica for messages acked in [start, end)."""
    delivered = {cid: at for _, cid, at in here.seen}
    lags = [
        delivered[cid] - at
        for cid, (_, at) in sent.acks.items()
        if start <= at < end and cid in delivered
    ]
    return f"max {max(lags):.1f} s over {len(lags)}" if lags else "none"


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def test_redis_black_hole_for_10_s_under_load(
    faulty: FaultyMesh, http: aiohttp.ClientSession
) -> None:
    redis_link = faulty.links["redis"]
    gateway_ops = faulty.ops_port("gateway")
    code, output = await mesh_cli(faulty.mesh, "seed", "--count", "40")  # idempotent
    assert code == 0, output
    status, page = await _served(http, "GET", f"{faulty.gateway}/api/v1/products?pageSize=20")
    assert status == 200, page
    assert page["products"], page
    product_ids = [p["id"] for p in page["products"]]
    sender = await new_account(faulty.mesh, http)
    listener = await new_account(faulty.mesh, http)
    remote = await new_account(faulty.mesh, http)
    status, _, room = await call(
        http,
        "POST",
        f"{faulty.gateway}/api/v1/chat/rooms",
        sender.access_token,
        json={"name": "outage", "private": False},
    )
    assert status == 201, room
    chat_1, chat_2 = (f"ws://127.0.0.1:{port}/ws/chat" for port in faulty.chat_ports)

    def auth(account: Account) -> dict[str, str]:
        return {"Authorization": f"Bearer {account.access_token}"}

    switches_before = await _metric(
        http, gateway_ops, "mesh_gateway_ratelimit_fallback_switches_total"
    )
    async with (
        connect(chat_1, additional_headers=auth(sender), ping_interval=None) as sending,
        connect(chat_1, additional_headers=auth(listener), ping_interval=None) as local,
        connect(chat_2, additional_headers=auth(remote), ping_interval=None) as far,
    ):
        for socket in (sending, local, far):
            await _joined(socket, room["id"])
        sent = ChatListener("sender")
        here, there = ChatListener("chat-1"), ChatListener("chat-2")
        readers = [
            asyncio.create_task(who.read(socket))
            for who, socket in ((sent, sending), (here, local), (there, far))
        ]
        sent_at: dict[str, float] = {}
        http_results: list[tuple[float, int, bool, float]] = []  # at, status, headers, seconds
        fallback_seen = 0.0

        async def chat_load(until: float) -> None:
            while time.monotonic() < until:
                client_msg_id = uuid.uuid4().hex
                sent_at[client_msg_id] = time.monotonic()
                await sending.send(
                    orjson.dumps(
                        {
                            "type": "send",
                            "room": room["id"],
                            "clientMsgId": client_msg_id,
                            "text": f"during the outage {len(sent_at)}",
                        }
                    ).decode()
                )
                await asyncio.sleep(CHAT_EVERY)

        async def http_load(until: float, worker: int) -> None:
            account = (sender, listener, remote)[worker % 3]
            n = 0
            while time.monotonic() < until:
                n += 1
                if n % 2:
                    url = f"{faulty.gateway}/api/v1/products/{product_ids[n % len(product_ids)]}"
                else:
                    url = f"{faulty.gateway}/api/v1/products?pageSize=5"
                started = time.monotonic()
                status, headers, _ = await call(http, "GET", url, account.access_token)
                http_results.append(
                    (
                        started,
                        status,
                        "RateLimit" in headers and "RateLimit-Policy" in headers,
                        time.monotonic() - started,
                    )
                )

        async def watch_fallback(until: float) -> None:
            nonlocal fallback_seen
            while time.monotonic() < until:
                fallback_seen = max(
                    fallback_seen,
                    await _metric(http, gateway_ops, "mesh_gateway_ratelimit_fallback_active"),
                )
                await asyncio.sleep(0.5)

        outage_started = time.monotonic()
        outage_ends = outage_started + OUTAGE_SECONDS
        redis_link.add(BlackHole())
        try:
            await asyncio.gather(
                chat_load(outage_ends),
                watch_fallback(outage_ends),
                *(http_load(outage_ends, worker) for worker in range(4)),
            )
        finally:
            redis_link.clear()
        healed = time.monotonic()
        outage = healed - outage_started
        # After: load goes on for a while, and every replica catches up.
        await asyncio.gather(
            chat_load(healed + 2), *(http_load(healed + 2, worker) for worker in range(2))
        )
        await _within(15, lambda: len(sent.acks) >= len(sent_at))
        acked = {cid: seq for cid, (seq, _) in sent.acks.items()}
        await _within(
            20,
            lambda: all(set(acked) <= {cid for _, cid, _ in who.seen} for who in (here, there)),
        )
        for task in readers:
            task.cancel()
        caught_up = time.monotonic() - healed

    # HTTP: served throughout, from PostgreSQL, with the limits still applied locally.
    during = [r for r in http_results if r[0] < healed]
    statuses = Counter(status for _, status, _, _ in http_results)
    TALLY.tried("redis-black-hole http", len(http_results))
    TALLY.saw_server_errors(sum(n for s, n in statuses.items() if s >= 500))
    switches = (
        await _metric(http, gateway_ops, "mesh_gateway_ratelimit_fallback_switches_total")
        - switches_before
    )
    p99_during = _p99([seconds for _, _, _, seconds in during])
    print(
        f"\nredis black hole: {outage:.1f} s; {len(http_results)} catalog GETs"
        f" ({len(during)} during), statuses {dict(statuses)}, p99 during"
        f" {p99_during * 1000:.0f} ms; fallback gauge max {fallback_seen},"
        f" switches {switches}"
    )
    assert outage >= OUTAGE_SECONDS
    assert len(during) >= 50, "too little HTTP load during the outage"
    assert statuses == {200: len(http_results)}, dict(statuses)
    assert all(has for _, _, has, _ in http_results), "a response without RateLimit fields"
    assert fallback_seen >= 1, "the rate limiter never switched to its local fallback"
    assert switches >= 1

    # Chat: everything sent was acknowledged; the sender's replica delivered during the
    # outage; the other replica caught up after it; every acknowledged message is stored
    # and was seen once, in seq order, by both.
    TALLY.tried("redis-black-hole chat", len(sent_at))
    during_ids = [cid for cid, at in sent_at.items() if at < healed]
    local_during = {cid for _, cid, at in here.seen if at < healed}
    print(
        f"chat: {len(sent_at)} sent ({len(during_ids)} during the outage), {len(acked)} acked,"
        f" {len(local_during & set(during_ids))} delivered on the sender's replica during the"
        f" outage; both replicas had every acked message {caught_up:.1f} s after the heal;"
        f" errors {sent.errors[:3]}"
    )
    assert not sent.errors, sent.errors
    assert set(acked) == set(sent_at), "messages sent were never acknowledged"
    # Acknowledged during the outage, and early enough for the hubs' counter sync (every 5 s)
    # to have run since: delivered on the sender's replica before Redis came back.
    acked_early = {cid for cid, (_, at) in sent.acks.items() if outage_started < at < healed - 7}
    acked_during = {cid for cid, (_, at) in sent.acks.items() if outage_started < at < healed}
    print(
        f"chat: {len(acked_during)} acked during the outage, {len(acked_early)} of them in its"
        f" first {OUTAGE_SECONDS - 7:.0f} s; send->delivery lag on its replica"
        f" {_local_lag(sent, here, outage_started, healed)}"
    )
    assert len(acked_during) >= OUTAGE_SECONDS, "sends stalled during the outage"
    assert acked_early, "nothing was acknowledged early in the outage"
    assert acked_early <= local_during, "the sender's replica stopped delivering during the outage"
    status, _, history = await call(
        http,
        "GET",
        f"{faulty.gateway}/api/v1/chat/rooms/{room['id']}/messages?pageSize=100",
        sender.access_token,
    )
    assert status == 200, history
    stored = {m["clientMsgId"] for m in history["messages"]}
    lost = len(set(acked) - stored)
    for who in (here, there):
        ids = [cid for _, cid, _ in who.seen]
        lost += len(set(acked) - set(ids))
        assert len(ids) == len(set(ids)), f"{who.name} saw a message twice"
        seqs = [seq for seq, _, _ in who.seen]
        assert seqs == sorted(seqs), f"{who.name} saw messages out of order"
    TALLY.saw_lost(lost)
    assert lost == 0, "acknowledged messages were lost"
    TALLY.fault_survived("redis black hole 10 s")
