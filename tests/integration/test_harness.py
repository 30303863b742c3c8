"""The backing-service harness with real embedded servers, real sockets and real data.

These always start embedded servers (even where the machine has its own): that is the path a
user without PostgreSQL, Redis or MongoDB takes. initdb runs once, in the module fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from mesh.harness import (
    BackingConfig,
    BackingStartError,
    BackingUrls,
    EmbeddedPostgres,
    EmbeddedRedis,
    PortInUse,
    backing_services,
    free_port,
    port_is_free,
)
from mesh.settings import Env, SettingsError

MACHINE_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
MACHINE_REDIS = "redis://127.0.0.1:6379/0"
UNUSED_MONGO = "mongodb://127.0.0.1:9/?directConnection=true"
REPO_ROOT = Path(__file__).resolve().parents[2]


def embedded_config(data_dir: Path, **overrides: Any) -> BackingConfig:
    ports = {"postgres_port": free_port(), "redis_port": free_port(), "mongo_port": free_port()}
    return BackingConfig(data_dir=data_dir, **{**ports, **overrides})


async def sql(dsn: str, query: str) -> Any:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def mongo(url: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


def initdb_runs(data_dir: Path) -> int:
    log = (data_dir / "logs" / "postgres.log").read_text()
    return sum(1 for line in log.splitlines() if line.startswith("---") and "/initdb " in line)


def alive(pid: int) -> bool:
    """True for a running process (a zombie waiting for its reaper is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@contextlib.contextmanager
def listening_socket() -> Iterator[int]:
    """A port some other program is listening on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@dataclass(frozen=True)
class Seeded:
    """Embedded servers started cold, given one row, key and document, then stopped."""

    config: BackingConfig
    urls: BackingUrls
    start_seconds: float
    stop_seconds: float


@pytest_asyncio.fixture(scope="module")
async def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    config = embedded_config(tmp_path_factory.mktemp("harness"))
    began = time.monotonic()
    async with backing_services(config) as urls:
        start_seconds = time.monotonic() - began
        await sql(urls.postgres_dsn, "CREATE TABLE kept AS SELECT 'row' AS v")
        async with redis_client(urls.redis_url) as client:
            await client.set("kept", "key")
        async with mongo(urls.mongo_url) as client:
            await client.harness.kept.insert_one({"_id": 1, "v": "document"})
        stopping = time.monotonic()
    return Seeded(config, urls, start_seconds, time.monotonic() - stopping)


async def test_cold_start_answers_and_stops_quickly(seeded: Seeded) -> None:
    config = seeded.config
    assert seeded.urls == BackingUrls(
        postgres_dsn=f"postgresql://postgres@127.0.0.1:{config.postgres_port}/postgres",
        redis_url=f"redis://127.0.0.1:{config.redis_port}/0",
        mongo_url=f"mongodb://127.0.0.1:{config.mongo_port}/?directConnection=true",
    )
    assert initdb_runs(config.data_dir) == 1
    assert seeded.start_seconds < 30
    assert seeded.stop_seconds < 10
    for port in (config.postgres_port, config.redis_port, config.mongo_port):
        assert port_is_free("127.0.0.1", port), f"port {port} still taken after stop"
    assert not list((config.data_dir / "run").glob("*.pid"))


async def test_data_survives_restart(seeded: Seeded) -> None:
    async with backing_services(seeded.config) as urls:
        assert await sql(urls.postgres_dsn, "SELECT v FROM kept") == "row"
        async with redis_client(urls.redis_url) as client:
            assert await client.get("kept") == b"key"
        async with mongo(urls.mongo_url) as client:
            assert await client.harness.kept.find_one({"_id": 1}) == {"_id": 1, "v": "document"}
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 10
    assert initdb_runs(seeded.config.data_dir) == 1  # the warm start reused the cluster


async def test_one_server_can_be_restarted(seeded: Seeded) -> None:
    server = EmbeddedRedis(seeded.config.data_dir, port=seeded.config.redis_port)
    await server.start()
    try:
        first = server.process
        assert first is not None
        async with redis_client(server.url) as client:
            await client.set("restarted", "yes")
        await server.stop()
        assert first.returncode is not None
        assert server.process is None
        await server.start()
        assert server.process is not None
        assert server.process.pid != first.pid
        async with redis_client(server.url) as client:
            assert await client.get("restarted") == b"yes"
    finally:
        await server.stop()


async def test_stale_postmaster_is_stopped_first(seeded: Seeded) -> None:
    data_dir, port = seeded.config.data_dir, seeded.config.postgres_port
    left_over = EmbeddedPostgres(data_dir, port=port)  # stands in for a killed supervisor's child
    await left_over.start()
    stale = left_over.process
    assert stale is not None
    fresh = EmbeddedPostgres(data_dir, port=port)
    try:
        await fresh.start()

        assert await asyncio.wait_for(stale.wait(), 5) == 0  # fast shutdown, clean exit
        assert fresh.process is not None
        assert fresh.process.pid != stale.pid
        assert fresh.ran_initdb is False
        assert await sql(fresh.url, "SELECT v FROM kept") == "row"
    finally:
        await fresh.stop()
        await left_over.stop()


async def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    port = free_port()
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from mesh.harness import EmbeddedRedis\n"
        "async def main():\n"
        f"    server = EmbeddedRedis(Path({str(tmp_path)!r}), port={port})\n"
        "    await server.start()\n"
        "    print(server.process.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    supervisor = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert supervisor.stdout is not None
    child = int(await asyncio.wait_for(supervisor.stdout.readline(), 15))
    assert not port_is_free("127.0.0.1", port)

    supervisor.send_signal(signal.SIGKILL)
    await supervisor.wait()

    for _ in range(100):
        if port_is_free("127.0.0.1", port):
            break
        await asyncio.sleep(0.05)
    assert port_is_free("127.0.0.1", port), "the orphaned redis-server kept running"
    assert not alive(child)


async def test_configured_urls_start_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "unused"
    postgres_dsn = Env().str("MESH_POSTGRES_DSN", MACHINE_POSTGRES)
    redis_url = Env().str("MESH_REDIS_URL", MACHINE_REDIS)
    with listening_socket() as taken:  # embedded ports taken: nothing may even look at them
        config = BackingConfig(
            data_dir=data_dir,
            postgres_dsn=postgres_dsn,
            redis_url=redis_url,
            mongo_url=UNUSED_MONGO,
            postgres_port=taken,
            redis_port=taken,
            mongo_port=taken,
        )
        async with backing_services(config) as urls:
            assert urls == BackingUrls(postgres_dsn, redis_url, UNUSED_MONGO)
            with contextlib.suppress(OSError, asyncpg.PostgresError):  # when reachable
                assert await sql(urls.postgres_dsn, "SELECT 1") == 1
            with contextlib.suppress(OSError, aioredis.ConnectionError):
                async with redis_client(urls.redis_url) as client:
                    assert await client.ping() is True
    assert not data_dir.exists()


async def test_port_in_use_is_reported_before_anything_starts(tmp_path: Path) -> None:
    with listening_socket() as taken:
        config = embedded_config(tmp_path, mongo_port=taken)

        with pytest.raises(PortInUse) as error:
            async with backing_services(config):
                pytest.fail("started despite a taken port")

    assert str(error.value) == f"embedded mongo: port {taken} on 127.0.0.1 is already in use"
    assert (error.value.name, error.value.port) == ("mongo", taken)
    assert not (tmp_path / "logs").exists()  # postgres and redis were not started either


async def test_child_dying_at_start_names_its_log_and_others_stop(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "appendonly.aof").write_text("this is not an append-only file\n")
    config = embedded_config(tmp_path, postgres_dsn=MACHINE_POSTGRES)

    with pytest.raises(BackingStartError) as error:
        async with backing_services(config):
            pytest.fail("started with a corrupt AOF")

    log = tmp_path / "logs" / "redis.log"
    assert error.value.name == "redis"
    assert error.value.log_path == log
    assert "embedded redis exited with code" in str(error.value)
    assert str(log) in str(error.value)
    assert "Bad file format" in str(error.value)  # the log's last lines are included
    assert (tmp_path / "logs" / "mongo.log").exists()  # mongo was started ...
    assert port_is_free("127.0.0.1", config.mongo_port)  # ... and stopped again


def test_config_from_env_reads_urls_and_ports(tmp_path: Path) -> None:
    env = Env(
        {
            "MESH_POSTGRES_DSN": "postgres://app:pw@db:5432/postgres",
            "MESH_REDIS_URL": "",  # empty: not configured
            "MESH_MONGO_URL": "mongodb+srv://cluster.example.net/",
            "MESH_EMBEDDED_REDIS_PORT": "26379",
        }
    )

    config = BackingConfig.from_env(env, tmp_path)

    assert config == BackingConfig(
        data_dir=tmp_path,
        postgres_dsn="postgres://app:pw@db:5432/postgres",
        mongo_url="mongodb+srv://cluster.example.net/",
        redis_port=26379,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MESH_POSTGRES_DSN", "mysql://db/x"),
        ("MESH_REDIS_URL", "http://cache:6379"),
        ("MESH_MONGO_URL", "mongodb://:27017"),
        ("MESH_EMBEDDED_POSTGRES_PORT", "99999"),
        ("MESH_EMBEDDED_MONGO_PORT", "mongo"),
    ],
)
def test_config_from_env_names_a_bad_variable(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        BackingConfig.from_env(Env({variable: value}), tmp_path)
    assert error.value.variable == variable
