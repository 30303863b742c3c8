"""`python -m gateway --workers N` as real processes: N workers share the API and ops ports
(SO_REUSEPORT) and all serve, metrics add up across them, and the parent stops them all.

Which worker served a connection is read from the kernel (`/proc`): the server side of each
client connection is a socket owned by exactly one worker process. Linux only, as the mesh.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh.netbind import free_port
from tests.integration.gateway.conftest import closed_address

EX_CONFIG = 78


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    port: int
    ops_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.ops_port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        return child_pids(self.process.pid)


def gateway_env(port: int, ops_port: int, **overrides: str) -> dict[str, str]:
    """A gateway whose upstreams are all down: routes that need none still answer."""
    nowhere = closed_address()
    return {
        **os.environ,
        "MESH_GATEWAY_PORT": str(port),
        "MESH_GATEWAY_OPS_PORT": str(ops_port),
        "MESH_USERS_ADDR": nowhere,
        "MESH_CATALOG_ADDR": nowhere,
        "MESH_ANALYTICS_ADDR": nowhere,
        "MESH_CHAT_URL": f"http://{nowhere}",
        "MESH_GATEWAY_RATE_LIMITS": "false",
        "MESH_SHUTDOWN_GRACE_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }


def start_gateway(tmp_path: Path, *args: str, **env: str) -> GatewayProcess:
    """`python -m gateway *args` on free ports, its output in a file under `tmp_path`."""
    port, ops_port = free_port(), free_port()
    log_path = tmp_path / f"gateway-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            env=gateway_env(port, ops_port, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return GatewayProcess(process, port, ops_port, log_path)


def multiproc_dir(pid: int) -> Path:
    """The PROMETHEUS_MULTIPROC_DIR a worker was started with."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    value = next(v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR="))
    directory = Path(value.split(b"=", 1)[1].decode())
    assert directory.is_dir()
    return directory


def removed(path: Path) -> bool:
    return not path.exists()


@asynccontextmanager
async def running_gateway(
    tmp_path: Path, *args: str, expect_workers: int = 1, **env: str
) -> AsyncIterator[GatewayProcess]:
    """`python -m gateway *args` on free ports, once every worker listens on the API port."""
    gateway = start_gateway(tmp_path, *args, **env)
    process = gateway.process
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the gateway exited:\n{gateway.output()[-3000:]}"
            expected = set(gateway.workers()) if expect_workers > 1 else {process.pid}
            serving = listening_pids(gateway.port, {process.pid, *expected})
            if len(serving) == expect_workers and serving == expected:
                break
            assert time.monotonic() < deadline, f"not serving:\n{gateway.output()[-3000:]}"
            await asyncio.sleep(0.1)
        yield gateway
    finally:
        if process.poll() is None:
            process.kill()
            for pid in child_pids(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.wait()


# --- who owns which socket, from /proc --------------------------------------------------


def child_pids(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            pids.append(int(entry.name))
    return sorted(pids)


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_sockets() -> Iterator[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every TCP socket of this namespace."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
                yield (
                    int(local.rsplit(":", 1)[1], 16),
                    int(remote.rsplit(":", 1)[1], 16),
                    state,
                    inode,
                )


def _owners(inodes: set[int], pids: Iterable[int]) -> dict[int, int]:
    """Which of `pids` holds each of `inodes` (inode -> pid)."""
    return {inode: pid for pid in pids for inode in _socket_inodes(pid) & inodes}


def listening_pids(port: int, candidates: Iterable[int]) -> set[int]:
    """The processes among `candidates` listening on `port`."""
    inodes = {inode for local, _, state, inode in _tcp_sockets() if local == port and state == "0A"}
    return set(_owners(inodes, candidates).values())


def serving_pids(port: int, client_ports: set[int], candidates: Iterable[int]) -> dict[int, int]:
    """For each client port connected to `port`, the process owning the server's end."""
    by_inode = {
        inode: remote
        for local, remote, state, inode in _tcp_sockets()
        if local == port and remote in client_ports and state == "01"
    }
    return {by_inode[inode]: pid for inode, pid in _owners(set(by_inode), candidates).items()}


# --- clients ----------------------------------------------------------------------------


async def head_request(port: int) -> tuple[asyncio.StreamWriter, int, bytes]:
    """A HEAD /openapi.json on a new connection left open: (writer, client port, answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"HEAD /openapi.json HTTP/1.1\r\nHost: gateway\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return writer, writer.get_extra_info("sockname")[1], head


def metric_value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def fresh_get(url: str) -> tuple[int, str]:
    """GET on a connection of its own (so SO_REUSEPORT may pick another worker)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as answer:
        return answer.status, await answer.text()


def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    return process.wait(timeout=timeout)


def pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@contextmanager
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


# --- tests ------------------------------------------------------------------------------


async def test_two_workers_share_the_ports_serve_and_stop_together(tmp_path: Path) -> None:
    async with running_gateway(
        tmp_path, "--workers", "2", expect_workers=2, MESH_GATEWAY_WORKERS="1"
    ) as gateway:  # the flag wins over the variable
        workers = gateway.workers()
        assert len(workers) == 2
        assert gateway.process.pid not in workers
        metrics_dir = multiproc_dir(workers[0])

        opened = [await head_request(gateway.port) for _ in range(24)]
        assert all(head.startswith(b"HTTP/1.1 200 ") for _, _, head in opened)
        clients = {client_port for _, client_port, _ in opened}
        owners = serving_pids(gateway.port, clients, [gateway.process.pid, *workers])
        assert len(owners) == 24
        assert set(owners.values()) == set(workers)  # both workers answered on one port
        for writer, _, _ in opened:
            writer.close()

        instances = set()
        for _ in range(16):
            status, body = await fresh_get(f"{gateway.ops_url}/version")
            assert status == 200
            instances.add(body)
        assert len(instances) == 2  # the ops port is shared too: each worker answers

        for _ in range(4):  # whichever worker answers the scrape reports all of them
            status, text = await fresh_get(f"{gateway.ops_url}/metrics")
            assert status == 200
            count = metric_value(
                text,
                "mesh_http_server_requests_total",
                route="/openapi.json",
                method="HEAD",
                status="200",
            )
            assert count == 24
            assert metric_value(text, "mesh_process_ready") == 1.0  # every live worker

        gateway.process.send_signal(signal.SIGTERM)
        assert wait_exit(gateway.process, 15) == 0, gateway.output()[-3000:]
        for pid in workers:
            assert pid_gone(pid)
        assert removed(metrics_dir)
    assert "Traceback" not in gateway.output()


async def test_a_worker_that_dies_takes_the_gateway_down_whole(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, "--workers", "2", expect_workers=2) as gateway:
        first, second = gateway.workers()
        os.kill(first, signal.SIGKILL)
        assert wait_exit(gateway.process, 15) == 1  # restarted whole by mesh up / orchestrator
        assert pid_gone(second)
        assert "worker 1 exited with code -9: stopping the others" in gateway.output()


async def test_sigint_reaches_every_worker(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, expect_workers=2, MESH_GATEWAY_WORKERS="2") as gateway:
        workers = gateway.workers()
        gateway.process.send_signal(signal.SIGINT)
        assert wait_exit(gateway.process, 15) == 0
        assert all(pid_gone(pid) for pid in workers)


def test_a_taken_port_stops_the_parent_before_any_worker(tmp_path: Path) -> None:
    with taken_port() as port:
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "--workers", "2"],
            env=gateway_env(port, free_port()),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == EX_CONFIG
    assert result.stderr.strip() == (
        f"gateway: MESH_GATEWAY_PORT: port {port} on 127.0.0.1 is already in use"
    )
    assert "started worker" not in result.stdout


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_worker_count_is_refused(value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--workers", value],
        env=gateway_env(free_port(), free_port()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--workers" in result.stderr
