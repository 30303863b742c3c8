"""Two chat replicas sharing rooms through Redis: fan-out, presence, typing, and nothing lost
while a replica restarts under load (a bounded form of the benchmark in
bench/chat_nothing_lost.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from bench.chat_load import run_load
from mesh.harness import BackingUrls
from tests.integration.services.chat_support import (
    Chat,
    ChatEnv,
    chat_env,
    client,
    create_room,
    rest,
)


@pytest.fixture(scope="module")
async def env(backing: BackingUrls) -> AsyncIterator[ChatEnv]:
    async with chat_env(backing) as env:
        yield env


@pytest.fixture(scope="module")
async def replicas(env: ChatEnv) -> AsyncIterator[tuple[Chat, Chat]]:
    async with env.chat() as one, env.chat() as two:
        yield one, two


async def test_messages_fan_out_across_replicas_in_seq_order(
    env: ChatEnv, replicas: tuple[Chat, Chat]
) -> None:
    one, two = replicas
    alice, alice_token = env.user()
    bob, bob_token = env.user()
    room = await create_room(one.http, alice_token)
    async with client(one.ws, alice_token) as a, client(two.ws, bob_token) as b:
        await a.join(room)
        joined = await b.join(room)
        assert set(joined["presence"]) == {alice, bob}
        presence = await a.expect("presence")
        assert (presence["joins"], presence["leaves"]) == ([bob], [])
        for i in range(5):
            await (a if i % 2 else b).send(
                {"type": "send", "room": room, "clientMsgId": f"m{i}", "text": f"text {i}"}
            )
        seen: dict[str, list[tuple[int, str]]] = {"a": [], "b": []}
        for name, c in (("a", a), ("b", b)):
            while len(seen[name]) < 5:
                frame = await c.recv()
                if frame["type"] == "message":
                    seen[name].append((frame["seq"], frame["text"]))
        assert seen["a"] == seen["b"]
        seqs = [seq for seq, _ in seen["a"]]
        assert seqs == sorted(seqs) == list(range(1, 6))
        # Typing crosses replicas too, and is not echoed to the typist.
        await b.send({"type": "typing", "room": room})
        assert await a.expect("typing") == {"type": "typing", "room": room, "userId": bob}
        await b.send({"type": "leave", "room": room})
        presence = await a.expect("presence")
        assert (presence["joins"], presence["leaves"]) == ([], [bob])
    status, history = await rest(
        "GET", f"{two.http}/api/v1/chat/rooms/{room}/messages", alice_token
    )
    assert status == 200
    assert [m["seq"] for m in history["messages"]] == [5, 4, 3, 2, 1]


async def test_presence_of_a_dead_replica_expires(env: ChatEnv) -> None:
    """A replica that dies leaves entries nobody refreshes: the next refresh reaps them."""
    alice, token = env.user()
    async with env.chat(presence_ttl_seconds=0.6) as chat:
        room = await create_room(chat.http, token)
        namespace = env.stores.namespace
        redis = aioredis.Redis.from_url(env.stores.redis_url)
        try:  # what a replica that died a moment ago left behind
            expiry = int(time.time() * 1000) + 400
            await redis.zadd(f"{namespace}chat:presence:{room}", {"ghost|dead-replica": expiry})
            await redis.hincrby(f"{namespace}chat:presence-users:{room}", "ghost", 1)
        finally:
            await redis.aclose()
        async with client(chat.ws, token) as c:
            joined = await c.join(room)
            assert set(joined["presence"]) == {alice, "ghost"}
            presence = await c.expect("presence", timeout=5)
            assert presence["leaves"] == ["ghost"]


async def test_nothing_acknowledged_is_lost_while_a_replica_restarts(env: ChatEnv) -> None:
    """4 clients x 100 messages over two replicas; one replica stops mid-run (1012) and a new
    one takes its place; clients reconnect with `since` and resend what was not acked."""
    fast = {"rate_per_second": 1000.0, "rate_burst": 1000}
    users = [env.user() for _ in range(4)]
    async with contextlib.AsyncExitStack() as stack:
        one = await stack.enter_async_context(env.chat(**fast))
        two_stack = contextlib.AsyncExitStack()
        two = await two_stack.enter_async_context(env.chat(**fast))
        stack.push_async_callback(lambda: two_stack.aclose())
        urls = [one.ws, two.ws]
        room = await create_room(one.http, users[0][1])
        for user_id, _ in users[1:]:
            status, _ = await rest(
                "POST",
                f"{one.http}/api/v1/chat/rooms/{room}/members",
                users[0][1],
                {"userId": user_id},
            )
            assert status == 200

        async def restart() -> None:
            nonlocal two_stack
            urls.remove(two.ws)
            await two_stack.aclose()  # SIGTERM-like: readiness off, 1012 in batches
            two_stack = contextlib.AsyncExitStack()
            three = await two_stack.enter_async_context(env.chat(**fast))
            urls.append(three.ws)

        result = await run_load(
            users, room, lambda: urls, messages=100, restart=restart, restart_after=0.4,
            timeout=50,
        )  # fmt: skip
    assert result.restarted
    assert result.reconnects >= 1
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(env.stores.mongo_url)
    try:
        messages = mongo[env.stores.database_name("chat")]["messages"]
        stored = await messages.find({"room": room, "hole": {"$ne": True}}).to_list()
    finally:
        await mongo.close()
    keys = [(m["userId"], m["clientMsgId"]) for m in stored]
    assert len(keys) == len(set(keys)) == 4 * 100  # every message stored exactly once
    assert set(result.acked) == set(keys)  # ... and every one acknowledged
    assert all(result.acked[(m["userId"], m["clientMsgId"])] == m["seq"] for m in stored)
    stored_seqs = sorted(int(m["seq"]) for m in stored)
    for seen in result.seen:
        assert seen == stored_seqs  # every client saw every message once, in seq order


async def test_a_stopping_replica_closes_with_1012(env: ChatEnv) -> None:
    _, token = env.user()
    async with env.chat() as chat:
        room = await create_room(chat.http, token)
        async with client(chat.ws, token) as c:
            await c.join(room)
            chat.stop()
            assert await c.close_code() == 1012
        await asyncio.sleep(0)
