"""What the chat scenarios share: backing stores, the users process, chat processes.

`chat_bench()` uses the configured PostgreSQL/Redis/MongoDB (MESH_POSTGRES_DSN,
MESH_REDIS_URL, MESH_MONGO_URL; else embedded servers under a temporary directory), migrates
a fresh namespace, starts the real users service (for its JWK Set) as a child process, and
yields a `ChatBench` that starts real chat processes (`python -m services.chat`) on free
loopback ports. On exit it stops them (SIGTERM), drops the namespace's databases and deletes
its Redis keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from pymongo import AsyncMongoClient

from bench.catalog_support import Process, drop, wait_serving
from bench.catalog_support import start as start_process
from bench.catalog_support import stop as stop_process
from bench.harness.cores import pin
from mesh.auth.keys import load_or_create_keys
from mesh.auth.tokens import TokenIssuer, TokenSettings
from mesh.harness import BackingConfig, BackingUrls, backing_services, free_port
from mesh.migrate import POSTGRES_SERVICES, migrate_all
from mesh.settings import Env
from mesh.topology import CHAT, USERS


def raise_open_files(wanted: int) -> int:
    """Raise RLIMIT_NOFILE toward `wanted` (children inherit it); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class ChatProcess:
    process: Process
    port: int
    ops_port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat"

    @property
    def pid(self) -> int:
        return self.process.popen.pid

    def cpu(self) -> float:
        return self.process.cpu()


@dataclass
class ChatBench:
    backing: BackingUrls
    namespace: str
    users: Process
    issuer: TokenIssuer
    chats: list[ChatProcess] = field(default_factory=list)
    cpus: tuple[int, ...] = ()  # where chat processes run (all of this one's by default)

    def user(self) -> tuple[str, str]:
        user_id = str(uuid.uuid4())
        return user_id, self.issuer.issue(user_id, ["user"])

    def env(self) -> dict[str, str]:
        return {
            "MESH_POSTGRES_DSN": self.backing.postgres_dsn,
            "MESH_REDIS_URL": self.backing.redis_url,
            "MESH_MONGO_URL": self.backing.mongo_url,
            "MESH_NAMESPACE": self.namespace,
            "MESH_USERS_ADDR": self.users.address,
        }

    async def start_chat(self, **settings: str) -> ChatProcess:
        port, ops_port = free_port(), free_port()
        env = {
            **self.env(),
            CHAT.port_var: str(port),
            CHAT.ops_port_var: str(ops_port),
            "MESH_SHUTDOWN_GRACE_SECONDS": "5",
            **settings,
        }
        process = start_process(CHAT, env)
        if self.cpus:
            pin(process.popen.pid, self.cpus)
        chat = ChatProcess(process, port, ops_port)
        await wait_ready(chat, 60)
        self.chats.append(chat)
        return chat

    def stop_chat(self, chat: ChatProcess, sig: int = signal.SIGTERM) -> None:
        if sig == signal.SIGTERM:
            stop_process(chat.process)
        else:
            chat.process.popen.send_signal(sig)
            chat.process.popen.wait(timeout=15)
        if chat in self.chats:
            self.chats.remove(chat)

    async def create_room(self, token: str, members: Sequence[str], private: bool = True) -> str:
        base = self.chats[0].http
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(
                f"{base}/api/v1/chat/rooms", json={"name": "bench", "private": private}
            ) as response:
                room = str((await response.json())["id"])
            for member in members:
                async with http.post(
                    f"{base}/api/v1/chat/rooms/{room}/members", json={"userId": member}
                ) as response:
                    assert response.status == 200, await response.text()
        return room


async def wait_ready(chat: ChatProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{chat.ops_port}/health/ready"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            if chat.process.popen.poll() is not None:
                raise RuntimeError(f"chat exited with {chat.process.popen.returncode}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("chat did not become ready")


@contextlib.asynccontextmanager
async def backing() -> AsyncIterator[BackingUrls]:
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as data_dir:
        config = BackingConfig.from_env(Env(), Path(data_dir))
        config = BackingConfig(
            data_dir=config.data_dir,
            postgres_dsn=config.postgres_dsn,
            redis_url=config.redis_url,
            mongo_url=config.mongo_url,
            postgres_port=free_port(),
            redis_port=free_port(),
            mongo_port=free_port(),
        )
        async with backing_services(config) as urls:
            yield urls


@contextlib.asynccontextmanager
async def chat_bench() -> AsyncIterator[ChatBench]:
    async with backing() as urls:
        namespace = f"bench{uuid.uuid4().hex[:6]}_"
        await migrate_all(
            urls.postgres_dsn, namespace, services={"users": POSTGRES_SERVICES["users"]}
        )
        keys_dir = Path(tempfile.mkdtemp(prefix="mesh-bench-keys-"))
        issuer = TokenIssuer(load_or_create_keys(keys_dir), TokenSettings())
        stores = {
            "MESH_POSTGRES_DSN": urls.postgres_dsn,
            "MESH_REDIS_URL": urls.redis_url,
            "MESH_MONGO_URL": urls.mongo_url,
            "MESH_NAMESPACE": namespace,
        }
        users = start_process(USERS, {**stores, "MESH_USERS_SIGNING_KEYS_DIR": str(keys_dir)})
        bench = ChatBench(urls, namespace, users, issuer)
        try:
            await wait_serving(users.address, users.popen, 60)
            yield bench
        finally:
            for chat in list(bench.chats):
                bench.stop_chat(chat)
            stop_process(users)
            shutil.rmtree(keys_dir, ignore_errors=True)
            await drop(urls, namespace)
            mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(urls.mongo_url)
            try:
                await mongo.drop_database(f"{namespace}chat")
            finally:
                await mongo.close()
