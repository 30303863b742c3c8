"""`kill -9` of a chat replica during the chat issue's nothing-lost run, in the whole mesh.

Clients of the two replicas of `mesh up` (their own ports) run `bench.chat_load.run_load`:
4 clients x 100 messages to one room, a window of 10 unacknowledged each. When 40% are
acknowledged chat-2 gets SIGKILL: no 1012, no draining, its sockets just vanish. Clients
reconnect to chat-1 (or to chat-2 once the supervisor has restarted it on the same port),
join with `since` and resend what was not acknowledged. Afterwards: every message is stored
in MongoDB exactly once, every acknowledged one with the seq of its ack, every client saw
every stored message once and in seq order, and the supervisor restarted chat-2.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from pymongo import AsyncMongoClient

from bench.chat_load import run_load
from mesh.harness import BackingUrls
from tests.e2e.client import call, new_account
from tests.resilience.faultproxy import ProxyHost
from tests.resilience.stack import FaultyMesh, exited_within, faulty_mesh
from tests.resilience.tally import TALLY

CLIENTS = 4
MESSAGES = 100

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def fast_chat(
    backing: BackingUrls, proxies: ProxyHost, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultyMesh]:
    """The faulty mesh with chat's per-connection rate limit out of the way of the load."""
    extra = {"MESH_CHAT_RATE_PER_SECOND": "1000", "MESH_CHAT_RATE_BURST": "1000"}
    with faulty_mesh(backing, tmp_path_factory.mktemp("chat-kill"), proxies, extra) as running:
        yield running


async def test_kill_9_of_a_chat_replica_loses_nothing_acknowledged(
    fast_chat: FaultyMesh, http: aiohttp.ClientSession, backing: BackingUrls
) -> None:
    faulty = fast_chat
    accounts = [await new_account(faulty.mesh, http) for _ in range(CLIENTS)]
    owner = accounts[0]
    status, _, room = await call(
        http, "POST", f"{faulty.gateway}/api/v1/chat/rooms", owner.access_token,
        json={"name": "nothing lost", "private": False},
    )  # fmt: skip
    assert status == 201, room
    for member in accounts[1:]:
        status, _, body = await call(
            http, "POST", f"{faulty.gateway}/api/v1/chat/rooms/{room['id']}/members",
            owner.access_token, json={"userId": member.id},
        )  # fmt: skip
        assert status == 200, body
    urls = [f"ws://127.0.0.1:{port}/ws/chat" for port in faulty.chat_ports]
    killed: dict[str, float] = {}

    async def kill() -> None:
        killed["pid"] = faulty.signal("chat-2", signal.SIGKILL)
        killed["at"] = time.monotonic()
        assert await asyncio.to_thread(exited_within, int(killed["pid"]), 5) is not None

    result = await run_load(
        [(a.id, a.access_token) for a in accounts], room["id"], lambda: urls,
        messages=MESSAGES, restart=kill, restart_after=0.4, timeout=90,
    )  # fmt: skip
    new_pid = await asyncio.to_thread(faulty.wait_restarted, "chat-2", int(killed["pid"]), 60)

    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(backing.mongo_url)
    try:
        messages = mongo[f"{faulty.mesh.namespace}chat"]["messages"]
        stored = await messages.find({"room": room["id"], "hole": {"$ne": True}}).to_list()
    finally:
        await mongo.close()
    keys = [(m["userId"], m["clientMsgId"]) for m in stored]
    seqs = sorted(int(m["seq"]) for m in stored)
    total = CLIENTS * MESSAGES
    lost = len(set(result.acked) - set(keys))
    TALLY.saw_lost(lost)
    TALLY.tried("chat messages under kill -9", total)
    exits = [
        r
        for r in faulty.mesh.records()
        if r.get("child") == "chat-2" and "exited with code" in r.get("msg", "")
    ]
    print(
        f"\nkill -9 chat-2: {total} sent, {len(result.acked)} acked, {len(stored)} stored, "
        f"{lost} acked but lost, {sum(len(s) for s in result.seen)} delivered "
        f"({len(seqs)} x {CLIENTS} expected), {result.reconnects} reconnects, "
        f"{result.elapsed:.1f} s, supervisor: {exits[-1:] and exits[-1]['msg']}"
    )

    assert result.restarted
    assert result.reconnects >= 1  # chat-2's clients came back (to chat-1 or the new chat-2)
    assert lost == 0
    assert len(keys) == len(set(keys)) == total  # every message stored exactly once
    assert set(result.acked) == set(keys)  # ... and acknowledged
    assert all(result.acked[(m["userId"], m["clientMsgId"])] == m["seq"] for m in stored)
    for seen in result.seen:
        assert seen == seqs  # every client saw every stored message once, in seq order
    assert exits, "the supervisor logged no exit of chat-2"
    assert exits[-1]["exit_code"] == -signal.SIGKILL
    assert new_pid != killed["pid"]
    TALLY.fault_survived("kill -9 chat replica")
