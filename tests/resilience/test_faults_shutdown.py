"""SIGTERM to each process of the mesh under steady HTTP, gRPC and WebSocket load.

For each of gateway, users, catalog, analytics and chat-1: a Latency toxic on the stores
(PostgreSQL and MongoDB) keeps handlers mid-work, steady load runs for a while, then the
process gets SIGTERM. Checked:

- every request in flight when the signal landed (started at least `MARGIN` before it, so
  the process had received it, and not finished) succeeds: HTTP 2xx, gRPC OK, chat ack;
- readiness (`/health/ready` on the ops port) is false within 1 s of the signal;
- the process exits 0 within the grace period (MESH_SHUTDOWN_GRACE_SECONDS=3);
- WebSocket clients are closed with the right code (1012 by chat, 1001 by the gateway);
- the supervisor restarts it, and the next case waits until it is ready again.

Requests started after the signal are counted on their own: the gateway's own listener is
closed at once (connection refused), and a single-replica service behind the gateway is
unavailable until its restart (503 from the gateway, its breaker or the upstream refusing);
they are printed, not required to succeed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from statistics import median

import aiohttp
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from protos.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from protos.users.v1 import users_pb2, users_pb2_grpc
from tests.e2e.client import Account, call, new_account
from tests.resilience.faultproxy import Latency
from tests.resilience.stack import FaultyMesh, exited_within
from tests.resilience.steady_load import SteadyLoad
from tests.resilience.tally import TALLY

GRACE = 3.0  # MESH_SHUTDOWN_GRACE_SECONDS of the faulty mesh
STORE_LATENCY_MS = 60  # per chunk, each way: a store round trip takes >= 120 ms
MARGIN = 0.1  # a request started this long before the signal has reached the process
LOAD_BEFORE = 1.5  # seconds of load before the signal
LOAD_AFTER = 1.0  # ... and after it
CONCURRENCY = 6  # loops per family
PROCESSES = ("gateway", "users", "catalog", "analytics", "chat-1")
CLOSE_CODE = {"gateway": "closed 1001", "chat-1": "closed 1012"}

pytestmark = pytest.mark.timeout(240)


class ReadinessWatch:
    """Polls a process's readiness in a thread of its own (the test's loop is busy)."""

    def __init__(self, faulty: FaultyMesh, process: str) -> None:
        self._faulty, self._process = faulty, process
        self._stop = threading.Event()
        self.went_false: float | None = None
        self.signalled_at: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready = self._faulty.ready(self._process)
            if self.signalled_at is not None and not ready:
                self.went_false = time.monotonic()
                return
            time.sleep(0.01)

    def __enter__(self) -> ReadinessWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, dict[str, object]]]:
    table: dict[str, dict[str, object]] = {}
    yield table
    print("\nSIGTERM under load (in-flight ok/total, readiness false after, exit after):")
    for name, row in table.items():
        print(f"  {name}: {row}")


@pytest.fixture(scope="module")
async def accounts(faulty: FaultyMesh) -> tuple[Account, Account, str]:
    """A user, an admin and a public chat room, made once for every case."""
    async with aiohttp.ClientSession() as http:
        user = await new_account(faulty.mesh, http)
        admin = await new_account(faulty.mesh, http, admin=True)
        status, _, room = await call(
            http, "POST", f"{faulty.gateway}/api/v1/chat/rooms", user.access_token,
            json={"name": "steady", "private": False},
        )  # fmt: skip
        assert status == 201, room
    return user, admin, room["id"]


async def _served_through_gateway(
    faulty: FaultyMesh, http: aiohttp.ClientSession, process: str, user: Account
) -> float:
    """Seconds until a call through the gateway reaches `process` again (its breaker closes)."""
    path = {
        "users": "/api/v1/users/me",
        "catalog": "/api/v1/products",
        "analytics": "/api/v1/users/me",  # admin-only routes: any served call will do
    }.get(process, "/api/v1/chat/rooms?pageSize=1")
    started = time.monotonic()
    async with asyncio.timeout(60):
        while True:
            try:
                status, _, _ = await call(http, "GET", f"{faulty.gateway}{path}", user.access_token)
                if status == 200:
                    return time.monotonic() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


def _count_request(admin: Account) -> analytics_pb2.CountEventsRequest:
    now = dt.datetime.now(dt.UTC)
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(now - dt.timedelta(days=1))
    end.FromDatetime(now + dt.timedelta(hours=1))
    return analytics_pb2.CountEventsRequest(type="page.view", start_time=start, end_time=end)


def _count_query() -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    return {
        "type": "page.view",
        "from": (now - dt.timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "to": (now + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
    }


def _start_load(
    load: SteadyLoad,
    faulty: FaultyMesh,
    process: str,
    http: aiohttp.ClientSession,
    channel: grpc.aio.Channel | None,
    user: Account,
    admin: Account,
    room: str,
) -> None:
    gw = faulty.gateway

    def http_get(url: str, token: str, params: dict[str, str] | None = None) -> None:
        async def one() -> tuple[bool, str]:
            headers = {"Authorization": f"Bearer {token}"}
            query = dict(params or {})
            if "q" in query:
                query["q"] = f"zz{uuid.uuid4().hex[:8]}"  # a cache miss: PostgreSQL is asked
            async with http.get(url, headers=headers, params=query) as response:
                await response.read()
                return response.status < 300, str(response.status)

        load.loop("http", one)

    user_md = (("authorization", f"Bearer {user.access_token}"),)
    admin_md = (("authorization", f"Bearer {admin.access_token}"),)
    for _ in range(CONCURRENCY):
        if process in ("gateway", "users"):
            http_get(f"{gw}/api/v1/users/me", user.access_token)
        if process in ("gateway", "catalog"):
            http_get(f"{gw}/api/v1/products", user.access_token, {"q": ""})
        if process == "analytics":
            http_get(f"{gw}/api/v1/analytics/counts", admin.access_token, _count_query())
        if process == "chat-1":
            base = f"http://127.0.0.1:{faulty.chat_ports[0]}"
            http_get(f"{base}/api/v1/chat/rooms/{room}/messages", user.access_token)
    if channel is not None:
        for _ in range(CONCURRENCY):
            if process == "users":
                stub = users_pb2_grpc.UsersServiceStub(channel)

                async def get_me(
                    stub: users_pb2_grpc.UsersServiceAsyncStub = stub,
                ) -> tuple[bool, str]:
                    await stub.GetMe(users_pb2.GetMeRequest(), metadata=user_md, timeout=10)
                    return True, "OK"

                load.loop("grpc", get_me)
            elif process == "catalog":
                cstub = catalog_pb2_grpc.CatalogServiceStub(channel)

                async def search(
                    stub: catalog_pb2_grpc.CatalogServiceAsyncStub = cstub,
                ) -> tuple[bool, str]:
                    q = f"zz{uuid.uuid4().hex[:8]}"
                    request = catalog_pb2.ListProductsRequest(q=q)
                    await stub.ListProducts(request, metadata=user_md, timeout=10)
                    return True, "OK"

                load.loop("grpc", search)
            elif process == "analytics":
                astub = analytics_pb2_grpc.AnalyticsServiceStub(channel)

                async def count(
                    stub: analytics_pb2_grpc.AnalyticsServiceAsyncStub = astub,
                ) -> tuple[bool, str]:
                    request = _count_request(admin)
                    await stub.CountEvents(request, metadata=admin_md, timeout=10)
                    return True, "OK"

                load.loop("grpc", count)
    if process in ("gateway", "chat-1"):
        url = (
            f"{gw.replace('http', 'ws', 1)}/ws/chat"
            if process == "gateway"
            else f"ws://127.0.0.1:{faulty.chat_ports[0]}/ws/chat"
        )
        for _ in range(CONCURRENCY // 2):
            load.websocket(http, url, user.access_token, room)


@pytest.mark.parametrize("process", PROCESSES)
async def test_sigterm_under_load_fails_nothing_in_flight(
    faulty: FaultyMesh,
    http: aiohttp.ClientSession,
    process: str,
    accounts: tuple[Account, Account, str],
    figures: dict[str, dict[str, object]],
) -> None:
    user, admin, room = accounts
    assert faulty.ready(process), f"{process} not ready before the case"
    channel = (
        grpc.aio.insecure_channel(f"127.0.0.1:{faulty.mesh.ports[process]}")
        if process in ("users", "catalog", "analytics")
        else None
    )
    load = SteadyLoad()
    for link in ("postgres", "mongo"):
        faulty.links[link].add(Latency(STORE_LATENCY_MS))
    try:
        _start_load(load, faulty, process, http, channel, user, admin, room)
        await load.warmed()
        with ReadinessWatch(faulty, process) as watch:
            await asyncio.sleep(LOAD_BEFORE)
            assert faulty.ready(process), f"{process} fell over under load alone"
            signalled = time.monotonic()
            watch.signalled_at = signalled
            pid = faulty.signal(process, signal.SIGTERM)
            exit_after = asyncio.create_task(asyncio.to_thread(exited_within, pid, GRACE + 5))
            await asyncio.sleep(LOAD_AFTER)
            await load.finish()
            exited = await exit_after
        readiness_after = None if watch.went_false is None else watch.went_false - signalled
    finally:
        faulty.heal()
        if channel is not None:
            await channel.close(None)

    in_flight = load.in_flight(signalled, MARGIN)
    failed = [o for o in in_flight if not o.ok]
    after = load.after(signalled)
    after_details: dict[str, int] = {}
    for o in after:
        key = f"{o.family} {o.detail}"
        after_details[key] = after_details.get(key, 0) + 1
    before = [o for o in load.outcomes if o.ended < signalled]
    for family, n in load.families(load.outcomes).items():
        TALLY.tried(f"sigterm load {family}", n)
    TALLY.saw_server_errors(sum(o.server_error for o in failed))
    figures[process] = {
        "requests before": len(before),
        "before failed": sum(not o.ok for o in before),
        "in flight": load.families(in_flight),
        "in-flight failed": [(o.family, o.detail) for o in failed],
        "in-flight latency p50 ms": round(
            median(o.ended - o.started for o in in_flight) * 1000 if in_flight else 0
        ),
        "readiness false after ms": None if readiness_after is None else round(
            readiness_after * 1000
        ),
        "exit after s": None if exited is None else round(exited, 2),
        "after signal": after_details,
    }  # fmt: skip
    print(f"\n{process}: {figures[process]}")

    new_pid = await asyncio.to_thread(faulty.wait_restarted, process, pid, 60)
    figures[process]["restarted, served through the gateway after s"] = round(
        time.monotonic() - signalled + await _served_through_gateway(faulty, http, process, user),
        1,
    )
    exits = [
        r
        for r in faulty.mesh.records()
        if r.get("child") == process and "exited with code" in r.get("msg", "")
    ]

    assert not [o for o in before if not o.ok], "requests failed before the signal"
    assert len(in_flight) >= CONCURRENCY, f"too few requests in flight: {figures[process]}"
    assert not failed, f"in-flight requests failed on SIGTERM: {figures[process]}"
    assert readiness_after is not None, figures[process]
    assert readiness_after <= 1.0, figures[process]
    assert exited is not None, figures[process]
    assert exited <= GRACE, figures[process]
    assert exits, "no exit record from the supervisor"
    assert exits[-1]["exit_code"] == 0, exits[-1]
    if process in CLOSE_CODE:  # every WebSocket client ended with the right close code
        ws_ends = [o.detail for o in after if o.family == "ws" and not o.ok]
        assert ws_ends, "no WebSocket client was closed"
        assert set(ws_ends) == {CLOSE_CODE[process]}, ws_ends
    assert new_pid != pid
    TALLY.fault_survived("sigterm under load")
