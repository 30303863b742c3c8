"""The whole mesh (`mesh up`) with a fault proxy on every link.

```
 test client ──> gateway ──[gateway->users]──────> users ──┐
                         ──[gateway->catalog]────> catalog ─┼──[postgres]──> PostgreSQL
                         ──[gateway->analytics]──> analytics┼──[redis]─────> Redis
                         ──[gateway->chat-1/2]───> chat-1/2 ┴──[mongo]─────> MongoDB wire
```

Every process reaches PostgreSQL, Redis and MongoDB through one proxy per store (so a
toxic on `redis` hits the gateway's rate limiter, the catalog cache and chat's fan-out at
once, as a real Redis outage does), and the gateway reaches each service (and each chat
replica) through a proxy of its own. Two chat replicas run, so cross-replica fan-out is on
the path. The test client talks to the gateway directly, and to a service's own port when
it wants to bypass the gateway.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mesh.harness import BackingUrls, free_port
from tests.e2e.conftest import READY
from tests.e2e.mesh_process import (
    MeshProcess,
    drop_mesh_databases,
    mesh_env,
    pid_alive,
    start_mesh,
)
from tests.resilience.faultproxy import FaultProxy, ProxyHost, target_of, url_through

GRPC_SERVICES = ("users", "catalog", "analytics")
CHAT_REPLICAS = 2


@dataclass
class FaultyMesh:
    mesh: MeshProcess
    links: dict[str, FaultProxy]  # "postgres", "redis", "mongo", "gateway->users", ...

    @property
    def gateway(self) -> str:
        return self.mesh.gateway

    @property
    def chat_ports(self) -> list[int]:
        return [int(p) for p in self.mesh.env["MESH_CHAT_PORTS"].split(",")]

    @property
    def chat_ops_ports(self) -> list[int]:
        return [int(p) for p in self.mesh.env["MESH_CHAT_OPS_PORTS"].split(",")]

    def ops_port(self, process: str) -> int:
        """The ops port of "gateway", "users", ..., or "chat-1" / "chat-2"."""
        if process.startswith("chat-"):
            return self.chat_ops_ports[int(process.removeprefix("chat-")) - 1]
        return self.mesh.ops_ports[process]

    def pid(self, process: str) -> int:
        """The current pid of a child of `mesh up` ("gateway", "users", ..., "chat-1")."""
        return self.mesh.child_pids()[process][-1]

    def ready(self, process: str) -> bool:
        url = f"http://127.0.0.1:{self.ops_port(process)}/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:  # refused, 503 (HTTPError is an OSError), timeout
            return False

    def wait_restarted(self, process: str, old_pid: int, timeout: float = 60) -> int:
        """Wait for the supervisor to restart `process` and for it to be ready; its new pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.mesh.child_pids().get(process, [])
            if pids and pids[-1] != old_pid and self.ready(process):
                return pids[-1]
            time.sleep(0.1)
        raise AssertionError(
            f"{process} not back within {timeout} s:\n{self.mesh.output()[-3000:]}"
        )

    def signal(self, process: str, sig: signal.Signals) -> int:
        pid = self.pid(process)
        os.kill(pid, sig)
        return pid

    def heal(self) -> None:
        """Every toxic off."""
        for proxy in self.links.values():
            proxy.clear()


def exited_within(pid: int, timeout: float) -> float | None:
    """Seconds until `pid` exited (polling), or None if it is still alive after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not pid_alive(pid):
            return time.monotonic() - started
        time.sleep(0.02)
    return None


@contextlib.contextmanager
def faulty_mesh(
    backing: BackingUrls,
    data_dir: Path,
    proxies: ProxyHost,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[FaultyMesh]:
    links = {
        "postgres": proxies.proxy("postgres", target_of(backing.postgres_dsn)),
        "redis": proxies.proxy("redis", target_of(backing.redis_url)),
        "mongo": proxies.proxy("mongo", target_of(backing.mongo_url)),
    }
    chat_ports = [free_port() for _ in range(CHAT_REPLICAS)]
    env, ports, ops_ports, namespace = mesh_env(
        {
            "MESH_POSTGRES_DSN": url_through(backing.postgres_dsn, links["postgres"]),
            "MESH_REDIS_URL": url_through(backing.redis_url, links["redis"]),
            "MESH_MONGO_URL": url_through(backing.mongo_url, links["mongo"]),
            "MESH_CHAT_REPLICAS": str(CHAT_REPLICAS),
            "MESH_CHAT_PORTS": ",".join(map(str, chat_ports)),
            "MESH_CHAT_OPS_PORTS": ",".join(str(free_port()) for _ in range(CHAT_REPLICAS)),
            **(extra_env or {}),
        },
        data_dir,
    )
    for name in GRPC_SERVICES:
        link = links[f"gateway->{name}"] = proxies.proxy(
            f"gateway->{name}", f"127.0.0.1:{ports[name]}"
        )
        env[f"MESH_{name.upper()}_ADDR"] = link.address
    chat_urls = []
    for replica, port in enumerate(chat_ports, start=1):
        link = links[f"gateway->chat-{replica}"] = proxies.proxy(
            f"gateway->chat-{replica}", f"127.0.0.1:{port}"
        )
        chat_urls.append(f"http://{link.address}")
    env["MESH_CHAT_URL"] = ",".join(chat_urls)
    running = start_mesh(env, ports, ops_ports, namespace, data_dir / "mesh-up.log")
    try:
        running.wait_for(READY, timeout=150)
        yield FaultyMesh(running, links)
    finally:
        for proxy in links.values():
            proxy.clear()
        if running.process.poll() is None:
            running.stop(timeout=30)
        drop_mesh_databases(backing.postgres_dsn, namespace)
