"""Chat test helpers: a real users service for the keys, chat replicas on real sockets, and a
small WebSocket client (the `websockets` library) that speaks the chat protocol.

One users service and one namespace per test module (`chat_env`); each test makes its own
users and rooms, so tests do not see each other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from websockets.asyncio.client import ClientConnection, connect

from mesh.auth.keys import SigningKey
from mesh.auth.tokens import TokenIssuer, TokenSettings
from mesh.backing_settings import StoreUrls
from mesh.harness import BackingUrls
from mesh.migrate import POSTGRES_SERVICES, migrate_all
from mesh.topology import CHAT
from services.chat.server import serve
from services.chat.settings import ChatSettings
from tests.integration.services.conftest import RunningService, run_service
from tests.integration.services.users.support import new_key, running_users, users_settings

TIMEOUT = 10.0


@dataclass
class ChatEnv:
    stores: StoreUrls
    key: SigningKey
    users: RunningService
    issuer: TokenIssuer = field(init=False)

    def __post_init__(self) -> None:
        self.issuer = TokenIssuer([self.key], TokenSettings())

    def user(self) -> tuple[str, str]:
        """A new user id and an access token for it."""
        user_id = str(uuid.uuid4())
        return user_id, self.issuer.issue(user_id, ["user"])

    def settings(self, **overrides: Any) -> ChatSettings:
        return dataclasses.replace(ChatSettings(stores=self.stores), **overrides)

    @contextlib.asynccontextmanager
    async def chat(self, **overrides: Any) -> AsyncIterator[Chat]:
        """A chat replica (the real `serve`) on free ports."""
        async with run_service(
            CHAT,
            self.settings(**overrides),
            serve,
            self.stores,
            env={"MESH_USERS_ADDR": self.users.address},
        ) as running:
            yield Chat(running)


@dataclass
class Chat:
    running: RunningService

    @property
    def http(self) -> str:
        return f"http://{self.running.address}"

    @property
    def ws(self) -> str:
        return f"ws://{self.running.address}/ws/chat"

    def stop(self) -> None:
        self.running.lifecycle.request_stop()


@contextlib.asynccontextmanager
async def chat_env(backing: BackingUrls) -> AsyncIterator[ChatEnv]:
    namespace = f"t{uuid.uuid4().hex[:8]}_"
    stores = StoreUrls(backing.postgres_dsn, backing.redis_url, backing.mongo_url, namespace)
    await migrate_all(
        backing.postgres_dsn, namespace, services={"users": POSTGRES_SERVICES["users"]}
    )
    key = new_key()
    try:
        async with running_users(users_settings(stores, [key])) as users:
            yield ChatEnv(stores, key, users)
    finally:
        connection = await asyncpg.connect(backing.postgres_dsn)
        try:
            await connection.execute(
                f'DROP DATABASE IF EXISTS "{stores.database_name("users")}" WITH (FORCE)'
            )
        finally:
            await connection.close()
        mongo: AsyncMongoClient[Any] = AsyncMongoClient(backing.mongo_url)
        try:
            await mongo.drop_database(stores.database_name("chat"))
        finally:
            await mongo.close()
        client = aioredis.Redis.from_url(backing.redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{namespace}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


async def rest(
    method: str,
    url: str,
    token: str | None,
    body: object = None,
    params: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
        session.request(method, url, json=body, headers=headers, params=params) as response,
    ):
        return response.status, await response.json(content_type=None)


async def create_room(base: str, token: str, name: str = "room", private: bool = False) -> str:
    status, room = await rest(
        "POST", f"{base}/api/v1/chat/rooms", token, {"name": name, "private": private}
    )
    assert status == 201, room
    return str(room["id"])


class Client:
    """A chat client over a real WebSocket (`websockets`): JSON frames in, JSON frames out.

    `expect` waits for a frame of one type; frames of other types that arrive meanwhile are
    kept, in order, for the next `recv`/`expect` (presence and typing frames are dropped
    by `expect` unless asked for).
    """

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.kept: list[dict[str, Any]] = []

    async def send(self, frame: Mapping[str, Any]) -> None:
        await self.connection.send(orjson.dumps(frame).decode())

    async def _read(self, timeout: float) -> dict[str, Any]:
        data = await asyncio.wait_for(self.connection.recv(), timeout)
        frame: dict[str, Any] = orjson.loads(data)
        return frame

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        if self.kept:
            return self.kept.pop(0)
        return await self._read(timeout)

    async def expect(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame of type `kind` (kept or new)."""
        for index, frame in enumerate(self.kept):
            if frame["type"] == kind:
                del self.kept[index]
                return frame
        async with asyncio.timeout(timeout):
            while True:
                frame = await self._read(timeout)
                if frame["type"] == kind:
                    return frame
                if frame["type"] not in ("presence", "typing"):
                    self.kept.append(frame)

    async def join(self, room: str, since: int | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "join", "room": room}
        if since is not None:
            frame["since"] = since
        await self.send(frame)
        return await self.expect("joined")

    async def say(self, room: str, text: str, client_msg_id: str | None = None) -> dict[str, Any]:
        client_msg_id = client_msg_id or uuid.uuid4().hex
        await self.send({"type": "send", "room": room, "clientMsgId": client_msg_id, "text": text})
        return await self.expect("ack")

    async def close_code(self, timeout: float = TIMEOUT) -> int | None:
        """Read until the server closes; the close code it sent."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                async for _ in self.connection:
                    pass
        await asyncio.wait_for(self.connection.wait_closed(), timeout)
        rcvd = self.connection.close_code
        return rcvd


@contextlib.asynccontextmanager
async def client(
    url: str,
    token: str | None,
    *,
    subprotocols: Sequence[str] | None = None,
    origin: str | None = None,
    **options: Any,
) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token and subprotocols is None else {}
    headers.update(options.pop("additional_headers", {}))
    async with connect(
        url,
        additional_headers=headers,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        open_timeout=TIMEOUT,
        close_timeout=2,
        ping_interval=None,
        **options,
    ) as connection:
        yield Client(connection)
