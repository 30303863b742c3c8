"""The chat WebSocket protocol against a real chat process (real Redis, the MongoDB-wire
server, a real users service for the keys), with a real client library (`websockets`):
the handshake checks, each bad input of the issue, ordering, idempotency, recovery,
presence, typing, keepalive and the slow reader."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from pymongo import AsyncMongoClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mesh.harness import BackingUrls
from tests.integration.services.chat_support import (
    Chat,
    ChatEnv,
    Client,
    chat_env,
    client,
    create_room,
    rest,
)
from tests.integration.services.users.support import claims, new_key, sign


@pytest.fixture(scope="module")
async def env(backing: BackingUrls) -> AsyncIterator[ChatEnv]:
    async with chat_env(backing) as env:
        yield env


@pytest.fixture(scope="module")
async def chat(env: ChatEnv) -> AsyncIterator[Chat]:
    async with env.chat() as chat:
        yield chat


async def refused(url: str, **options: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as refusal:
        async with connect(url, open_timeout=5, **options):
            pass
    return refusal.value


# The handshake.


async def test_no_token_or_a_bad_token_is_401_before_the_upgrade(env: ChatEnv, chat: Chat) -> None:
    foreign = sign(new_key(), claims())  # well formed, signed by a key users never had
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic x"}, {
        "Authorization": f"Bearer {foreign}"
    }):  # fmt: skip
        refusal = await refused(chat.ws, additional_headers=headers)
        assert refusal.response.status_code == 401
        assert refusal.response.headers["WWW-Authenticate"].startswith("Bearer")
        body = orjson.loads(refusal.response.body or b"{}")
        assert body["status"] == 401
    refusal = await refused(chat.ws, subprotocols=["bearer"])  # the pair without its token
    assert refusal.response.status_code == 401


async def test_a_foreign_origin_is_403(env: ChatEnv, chat: Chat) -> None:
    _, token = env.user()
    refusal = await refused(
        chat.ws,
        additional_headers={"Authorization": f"Bearer {token}"},
        origin="https://evil.example",  # type: ignore[arg-type]
    )
    assert refusal.response.status_code == 403
    async with client(chat.ws, token, origin="http://localhost:8080") as c:
        await c.send({"type": "ping"})
        assert await c.recv() == {"type": "pong"}


async def test_browsers_send_the_token_as_the_bearer_subprotocol(env: ChatEnv, chat: Chat) -> None:
    _, token = env.user()
    async with client(chat.ws, None, subprotocols=["bearer", token]) as c:
        assert c.connection.subprotocol == "bearer"
        await c.send({"type": "ping"})
        assert await c.recv() == {"type": "pong"}


async def test_at_most_five_connections_per_user(env: ChatEnv, chat: Chat) -> None:
    _, token = env.user()
    headers = {"Authorization": f"Bearer {token}"}
    connections = [await connect(chat.ws, additional_headers=headers) for _ in range(5)]
    try:
        refusal = await refused(chat.ws, additional_headers=headers)
        assert refusal.response.status_code == 429
    finally:
        for connection in connections:
            await connection.close()
    async with client(chat.ws, token):  # a slot is free again once one closes
        pass


# Bad frames.


async def test_invalid_json_gets_an_error_frame_and_the_connection_stays(
    env: ChatEnv, chat: Chat
) -> None:
    _, token = env.user()
    async with client(chat.ws, token) as c:
        await c.connection.send("{not json")
        error = await c.recv()
        assert (error["type"], error["code"]) == ("error", "invalid_json")
        await c.send({"type": "ping"})
        assert await c.recv() == {"type": "pong"}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "dance"}, "unknown_type"),
        ({"room": "x"}, "missing_field"),
        ([1, 2], "invalid_frame"),
        ({"type": "join"}, "missing_field"),
        ({"type": "join", "room": 7}, "invalid_field"),
        ({"type": "join", "room": "r", "since": -1}, "invalid_field"),
        ({"type": "send", "room": "r", "text": "hi"}, "missing_field"),
        ({"type": "send", "room": "r", "clientMsgId": "c1"}, "missing_field"),
        ({"type": "send", "room": "r", "clientMsgId": "c1", "text": ""}, "invalid_field"),
        ({"type": "leave"}, "missing_field"),
        ({"type": "typing"}, "missing_field"),
    ],
)
async def test_malformed_frames_get_the_error_code(
    env: ChatEnv, chat: Chat, frame: Any, code: str
) -> None:
    _, token = env.user()
    async with client(chat.ws, token) as c:
        await c.connection.send(orjson.dumps(frame).decode())
        error = await c.recv()
        assert (error["type"], error["code"]) == ("error", code), error


async def test_a_binary_frame_is_closed_with_1003(env: ChatEnv, chat: Chat) -> None:
    _, token = env.user()
    async with client(chat.ws, token) as c:
        await c.connection.send(b"\x00\x01")
        error = await c.recv()
        assert (error["type"], error["code"]) == ("error", "binary_frame")
        assert await c.close_code() == 1003


async def test_a_frame_over_64_kib_is_closed_with_1009(env: ChatEnv, chat: Chat) -> None:
    _, token = env.user()
    async with client(chat.ws, token) as c:
        await c.connection.send("x" * (64 * 1024 + 1))
        assert await c.close_code() == 1009


async def test_rooms_that_do_not_exist_or_are_not_yours(env: ChatEnv, chat: Chat) -> None:
    _, owner_token = env.user()
    _, token = env.user()
    private = await create_room(chat.http, owner_token, private=True)
    async with client(chat.ws, token) as c:
        missing = uuid.uuid4().hex[:24]
        await c.send({"type": "join", "room": missing})
        assert (await c.recv())["code"] == "room_not_found"
        await c.send({"type": "send", "room": missing, "clientMsgId": "a", "text": "hi"})
        error = await c.recv()
        assert (error["code"], error["ref"]) == ("room_not_found", "a")
        await c.send({"type": "join", "room": private})
        error = await c.recv()
        assert (error["code"], error["ref"]) == ("not_a_member", private)
        await c.send({"type": "send", "room": private, "clientMsgId": "b", "text": "hi"})
        assert (await c.recv())["code"] == "not_a_member"
        await c.send({"type": "typing", "room": private})
        assert (await c.recv())["code"] == "not_joined"
        await c.send({"type": "leave", "room": private})
        assert (await c.recv())["code"] == "not_joined"


async def test_text_over_4000_characters_is_refused(env: ChatEnv, chat: Chat) -> None:
    _, token = env.user()
    room = await create_room(chat.http, token)
    async with client(chat.ws, token) as c:
        await c.join(room)
        await c.send({"type": "send", "room": room, "clientMsgId": "long", "text": "x" * 4001})
        error = await c.recv()
        assert (error["code"], error["ref"]) == ("text_too_long", "long")
        ack = await c.say(room, "y" * 4000)
        assert ack["seq"] == 1


async def test_a_flood_gets_an_error_then_1008_and_others_are_untouched(
    env: ChatEnv, chat: Chat
) -> None:
    _, token = env.user()
    _, other_token = env.user()
    room = await create_room(chat.http, token)
    async with client(chat.ws, token) as flooder, client(chat.ws, other_token) as other:
        await other.join(room)
        for _ in range(60):
            await flooder.send({"type": "ping"})
        frames = []
        code = await asyncio.wait_for(_collect_until_close(flooder, frames), 10)
        assert code == 1008
        assert frames.count({"type": "pong"}) == 20  # the burst
        assert any(f.get("code") == "rate_limited" for f in frames)
        ack = await other.say(room, "still here")  # the other client is untouched
        assert (await other.expect("message"))["seq"] == ack["seq"]


async def _collect_until_close(c: Client, frames: list[dict[str, Any]]) -> int | None:
    with contextlib.suppress(ConnectionClosed):
        async for data in c.connection:
            frames.append(orjson.loads(data))
    return c.connection.close_code


# Messages.


async def test_send_is_idempotent_on_client_msg_id(env: ChatEnv, chat: Chat) -> None:
    alice, token = env.user()
    _, other_token = env.user()
    room = await create_room(chat.http, token)
    async with client(chat.ws, token) as a, client(chat.ws, other_token) as b:
        await a.join(room)
        await b.join(room)
        first = await a.say(room, "once", client_msg_id="same")
        again = await a.say(room, "once", client_msg_id="same")
        assert again == first
        after = await a.say(room, "next")
        assert after["seq"] > first["seq"]
        received = [(await b.expect("message")) for _ in range(2)]
        assert [m["clientMsgId"] for m in received] == ["same", after["clientMsgId"]]
        assert received[0]["seq"] == first["seq"]
        assert received[0]["userId"] == alice
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(env.stores.mongo_url)
    try:
        messages = mongo[env.stores.database_name("chat")]["messages"]
        assert await messages.count_documents({"room": room, "clientMsgId": "same"}) == 1
    finally:
        await mongo.close()


async def test_join_since_replays_in_order_then_live(env: ChatEnv, chat: Chat) -> None:
    _, token = env.user()
    room = await create_room(chat.http, token)
    async with client(chat.ws, token) as a:
        await a.join(room)
        for i in range(5):
            await a.say(room, f"m{i}")
    async with client(chat.ws, token) as b:
        joined = await b.join(room, since=2)
        assert (joined["lastSeq"], joined["recovered"]) == (5, True)
        replayed = [await b.expect("message") for _ in range(3)]
        assert [(m["seq"], m["text"]) for m in replayed] == [(3, "m2"), (4, "m3"), (5, "m4")]
        ack = await b.say(room, "live")
        live = await b.expect("message")
        assert (live["seq"], live["text"]) == (ack["seq"], "live") == (6, "live")


async def test_a_gap_over_the_replay_cap_is_not_recovered(env: ChatEnv) -> None:
    _, token = env.user()
    async with env.chat(replay_limit=3) as chat:
        room = await create_room(chat.http, token)
        async with client(chat.ws, token) as a:
            await a.join(room)
            for i in range(5):
                await a.say(room, f"m{i}")
            async with client(chat.ws, token) as b:
                joined = await b.join(room, since=1)
                assert (joined["lastSeq"], joined["recovered"]) == (5, False)
                ack = await b.say(room, "after")  # live resumes; history is paged over REST
                assert (await b.expect("message"))["seq"] == ack["seq"]
        status, page = await rest(
            "GET", f"{chat.http}/api/v1/chat/rooms/{room}/messages", token, params={"limit": "2"}
        )
        assert status == 200
        assert [m["seq"] for m in page["messages"]] == [6, 5]


async def test_presence_and_typing(env: ChatEnv, chat: Chat) -> None:
    alice, token = env.user()
    bob, bob_token = env.user()
    room = await create_room(chat.http, token)
    async with client(chat.ws, token) as a:
        joined = await a.join(room)
        assert joined["presence"] == [alice]
        async with client(chat.ws, bob_token) as b:
            joined = await b.join(room)
            assert sorted(joined["presence"]) == sorted([alice, bob])
            assert await a.recv() == {
                "type": "presence", "room": room, "joins": [bob], "leaves": [],
            }  # fmt: skip
            await b.send({"type": "typing", "room": room})
            await b.send({"type": "typing", "room": room})  # within 3 s: dropped
            assert await a.recv() == {"type": "typing", "room": room, "userId": bob}
            ack = await b.say(room, "typed")
            assert (await a.recv())["seq"] == ack["seq"]  # no second typing in between
        assert await a.recv() == {"type": "presence", "room": room, "joins": [], "leaves": [bob]}
    _status, page = await rest("GET", f"{chat.http}/api/v1/chat/rooms/{room}/messages", token)
    assert [m["text"] for m in page["messages"]] == ["typed"]  # typing is never stored


async def test_keepalive_pings_and_drops_a_silent_peer(env: ChatEnv) -> None:
    _, token = env.user()
    async with (
        env.chat(ping_seconds=0.2, idle_timeout_seconds=1.0) as chat,
        aiohttp.ClientSession() as session,
    ):
        silent = await session.ws_connect(
            chat.ws, headers={"Authorization": f"Bearer {token}"}, autoping=False
        )
        async with client(chat.ws, token) as answering:  # websockets answers pings
            ping = await silent.receive(timeout=5)
            assert ping.type is aiohttp.WSMsgType.PING
            started = time.monotonic()
            while (message := await silent.receive(timeout=5)).type is aiohttp.WSMsgType.PING:
                pass  # ... and is never answered
            assert message.type is aiohttp.WSMsgType.CLOSE
            assert message.data == 1001
            assert time.monotonic() - started < 3
            await answering.send({"type": "ping"})
            assert await answering.recv() == {"type": "pong"}  # still connected
        await silent.close()


async def test_a_client_that_never_reads_is_closed_1013_without_slowing_others(
    env: ChatEnv,
) -> None:
    _, token = env.user()
    _, reader_token = env.user()
    _, slow_token = env.user()
    async with env.chat(
        send_buffer_bytes=16 * 1024,
        socket_send_buffer_bytes=4096,  # small kernel buffers: the queue fills sooner
        rate_per_second=1000.0,
        rate_burst=1000,
        close_timeout_seconds=30.0,
    ) as chat:
        room = await create_room(chat.http, token)
        host, port = chat.running.address.rsplit(":", 1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        async with (
            client(chat.ws, slow_token, sock=sock, max_queue=1) as slow,
            client(chat.ws, reader_token) as reader,
            client(chat.ws, token) as sender,
        ):
            await slow.join(room)
            await reader.join(room)  # the sender does not join: it only sends
            text = "z" * 4000
            started = time.monotonic()
            for i in range(60):
                await sender.send(
                    {"type": "send", "room": room, "clientMsgId": f"f{i}", "text": text}
                )
            seen = 0
            while seen < 60:
                frame = await reader.recv()
                seen += frame["type"] == "message"
            assert time.monotonic() - started < 20
            assert await slow.close_code(timeout=20) == 1013
