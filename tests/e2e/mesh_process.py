"""Starting `mesh up` as a subprocess on free ports and reading what it says."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import orjson

from mesh.harness import free_port
from mesh.migrate import POSTGRES_SERVICES, quote_identifier
from mesh.topology import PROCESSES

MESH = str(Path(sys.executable).parent / "mesh")
E2E_POLICIES = Path(__file__).with_name("policies.toml")


@dataclass
class MeshProcess:
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    ops_ports: dict[str, int]
    log_path: Path
    namespace: str
    env: dict[str, str]
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        return lines

    def child_pids(self) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {}
        for record in self.records():
            if record.get("logger") == "mesh.up" and record["msg"].startswith("started "):
                pids.setdefault(record["msg"].removeprefix("started "), []).append(record["pid"])
        return pids

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                raise AssertionError(
                    f"mesh up exited ({self.process.returncode}) before "
                    f"{text!r}:\n{self.output()[-4000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} after {timeout} s:\n{self.output()[-4000:]}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        if self._log:
            self._log.close()
        return code, time.monotonic() - started


def mesh_env(
    base: dict[str, str], data_dir: Path, namespace: str | None = None
) -> tuple[dict[str, str], dict[str, int], dict[str, int], str]:
    namespace = namespace or f"e{uuid.uuid4().hex[:8]}_"
    ports = {p.name: free_port() for p in PROCESSES}
    ops_ports = {p.name: free_port() for p in PROCESSES}
    env = {  # `base` is applied last: a test's own settings win over these defaults
        **os.environ,
        "MESH_DATA_DIR": str(data_dir),
        "MESH_NAMESPACE": namespace,
        "MESH_SHUTDOWN_GRACE_SECONDS": "3",
        # Every e2e client is 127.0.0.1: the per-account limit is what the tests exercise.
        "MESH_USERS_LOGIN_MAX_ATTEMPTS_PER_ADDRESS": "100000",
        "MESH_GATEWAY_POLICIES": str(E2E_POLICIES),
        "MESH_GATEWAY_WORKERS": "1",  # tests/integration/gateway/test_workers.py runs more
        "MESH_EMBEDDED_POSTGRES_PORT": str(free_port()),
        "MESH_EMBEDDED_REDIS_PORT": str(free_port()),
        "MESH_EMBEDDED_MONGO_PORT": str(free_port()),
        **base,
    }
    for spec in PROCESSES:
        env[spec.port_var] = str(ports[spec.name])
        env[spec.ops_port_var] = str(ops_ports[spec.name])
    return env, ports, ops_ports, namespace


def start_mesh(
    env: dict[str, str],
    ports: dict[str, int],
    ops_ports: dict[str, int],
    namespace: str,
    log_path: Path,
) -> MeshProcess:
    log = log_path.open("ab")
    process = subprocess.Popen(
        [MESH, "up"], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    return MeshProcess(process, ports, ops_ports, log_path, namespace, env, log)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone between the open and the read
        return False


def drop_mesh_databases(postgres_dsn: str, namespace: str) -> None:
    """Drop the PostgreSQL databases a stopped test mesh made (those of its namespace), so a
    machine's server does not collect them run after run. Callable with or without a loop."""

    async def drop() -> None:
        connection = await asyncpg.connect(postgres_dsn)
        try:
            for service in POSTGRES_SERVICES:
                name = quote_identifier(f"{namespace}{service}")
                await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await connection.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, drop()).result(timeout=60)
