"""One real mesh for the scenarios that go through the gateway, and extra gateways.

`SharedMesh` starts `mesh up` on free loopback ports (the helpers of the e2e tests: the
policy file whose limits no client reaches, one gateway worker), with tracing on at 10%
exported over OTLP/gRPC to a sink (`tests/otlp_receiver.py --quiet`, only counting), seeds
50 products and registers a user. `extra_gateway()` starts one more gateway (1..N workers,
pinned, with its own settings) in front of the same upstreams and Redis: the scenarios that
compare configurations of the gateway start one per configuration.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.harness.cores import CoreSplit, pin, pin_tree, taskset
from bench.harness.machine import ROOT
from bench.harness.procfs import by_role, children, descendants
from mesh.harness import free_port
from mesh.topology import ANALYTICS, CATALOG, CHAT, GATEWAY, USERS
from tests.e2e.mesh_process import E2E_POLICIES, MESH, MeshProcess, mesh_env, start_mesh

STORE_VARS = ("MESH_POSTGRES_DSN", "MESH_REDIS_URL", "MESH_MONGO_URL")
PASSWORD = "a long enough secret"
ORIGIN = f"http://localhost:{GATEWAY.port}"  # in the gateway's default allow-list
TRACE_RATIO = "0.1"
# Which process of a mesh is which, by its command line (first match wins).
ROLES = {
    "gateway": "-m gateway",
    "users": "services.users",
    "catalog": "services.catalog",
    "analytics": "services.analytics",
    "chat": "services.chat",
    "redis": "redis-server",
    "mongodb-wire": "secantusd",
    "postgres": "postgres",
}


def store_overrides() -> dict[str, str]:
    """The configured PostgreSQL/Redis/MongoDB URLs (unset: the embedded servers)."""
    return {k: os.environ[k] for k in STORE_VARS if os.environ.get(k)}


def wait_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited ({process.returncode}) before port {port} opened")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout} s")
        time.sleep(0.05)


def listening_pids(port: int) -> set[int]:
    """The processes with a listening socket on `port` (``ss -ltnp``)."""
    found = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", found)}


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process exited ({process.returncode}): {url}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready after {timeout} s") from None
            time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def http_json(
    method: str, url: str, body: object | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=None if body is None else orjson.dumps(body),
        method=method,
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def first_product(gateway: str) -> str:
    """The id of one product of the catalog, read through the gateway."""
    status, body = http_json("GET", f"{gateway}/api/v1/products?pageSize=1")
    assert status == 200, body
    product_id: str = orjson.loads(body)["products"][0]["id"]
    return product_id


@dataclass
class ExtraGateway:
    url: str
    process: subprocess.Popen[bytes]
    workers: int

    @property
    def pids(self) -> list[int]:
        """The processes that serve: the workers (or the one process)."""
        if self.workers == 1:
            return [self.process.pid]
        return children(self.process.pid)


@dataclass
class SharedMesh:
    scratch: Path
    mesh: MeshProcess | None = None
    sink: subprocess.Popen[bytes] | None = None
    sink_endpoint: str = ""
    ready_seconds: float = 0.0
    product: str = ""
    product_body: bytes = b""
    email: str = ""
    _extra: list[ExtraGateway] = field(default_factory=list)

    # --- life -----------------------------------------------------------------------------

    def start(self, load_cpus: Sequence[int]) -> None:
        data_dir = self.scratch / "mesh"
        data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        with (self.scratch / "otlp.log").open("ab") as log:
            self.sink = subprocess.Popen(
                taskset(
                    load_cpus,
                    [sys.executable, "-m", "tests.otlp_receiver", "--port", str(port), "--quiet"],
                ),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_port(port, 30, self.sink)
        self.sink_endpoint = f"http://127.0.0.1:{port}"
        env, ports, ops_ports, namespace = mesh_env(
            {
                **store_overrides(),
                "MESH_LOG_LEVEL": "warning",
                "OTEL_TRACES_SAMPLER_ARG": TRACE_RATIO,
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.sink_endpoint,
                "MESH_USERS_LOGIN_MAX_ATTEMPTS_PER_ADDRESS": "1000000",
            },
            data_dir,
        )
        started = time.monotonic()
        self.mesh = start_mesh(env, ports, ops_ports, namespace, data_dir / "mesh.log")
        self.mesh.wait_for("the mesh is ready", timeout=240)
        self.ready_seconds = time.monotonic() - started
        seeded = subprocess.run(
            [MESH, "seed", "--count", "50"],
            env={**env, "MESH_POSTGRES_DSN": self.postgres_dsn},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if seeded.returncode != 0:
            raise RuntimeError(f"mesh seed failed:\n{seeded.stdout[-2000:]}{seeded.stderr[-2000:]}")
        self.product = first_product(self.gateway)
        status, self.product_body = http_json(
            "GET", f"{self.gateway}/api/v1/products/{self.product}"
        )
        assert status == 200, self.product_body
        self.email = f"bench-{uuid.uuid4().hex[:8]}@example.org"
        status, body = http_json(
            "POST",
            f"{self.gateway}/api/v1/auth/register",
            {"email": self.email, "password": PASSWORD, "displayName": "Bench"},
        )
        assert status == 200, body

    def stop(self) -> None:
        for gateway in self._extra:
            stop_process(gateway.process)
        if self.mesh is not None:
            try:
                self.mesh.stop(timeout=30)
            except subprocess.TimeoutExpired:
                self.mesh.process.kill()
                self.mesh.process.wait()
        if self.sink is not None:
            stop_process(self.sink)

    # --- what it is -------------------------------------------------------------------------

    @property
    def running(self) -> MeshProcess:
        assert self.mesh is not None, "the mesh is not started"
        return self.mesh

    @property
    def gateway(self) -> str:
        return self.running.gateway

    @property
    def data_dir(self) -> Path:
        return self.scratch / "mesh"

    @property
    def postgres_dsn(self) -> str:
        env = self.running.env
        return env.get("MESH_POSTGRES_DSN") or (
            f"postgresql://postgres@127.0.0.1:{env['MESH_EMBEDDED_POSTGRES_PORT']}/postgres"
        )

    @property
    def redis_url(self) -> str:
        env = self.running.env
        return env.get("MESH_REDIS_URL") or (
            f"redis://127.0.0.1:{env['MESH_EMBEDDED_REDIS_PORT']}/0"
        )

    def spans_exported(self) -> int:
        """Spans the OTLP sink has counted so far (it prints its count every 5 s)."""
        lines = (self.scratch / "otlp.log").read_text(errors="replace").split("\n")
        counts = [line.split(" spans in ")[0] for line in lines if " spans in " in line]
        return int(counts[-1]) if counts and counts[-1].isdigit() else 0

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.running.ports[name]}"

    def token(self) -> str:
        """A fresh access token of the bench user (they last 15 minutes)."""
        status, body = http_json(
            "POST",
            f"{self.gateway}/api/v1/auth/login",
            {"email": self.email, "password": PASSWORD},
        )
        assert status == 200, body
        token: str = orjson.loads(body)["accessToken"]
        return token

    def roles(self) -> dict[str, list[int]]:
        """The mesh's own processes by role (its gateway, catalog, redis...)."""
        mesh = self.running
        return by_role(descendants(mesh.process.pid), ROLES)

    def pin(self, split: CoreSplit, gateway_is_measured: bool = False) -> None:
        """The mesh's processes onto the upstream cores (its gateway onto the server cores
        when it is the measured process)."""
        pin_tree(self.running.process.pid, split.upstream)
        if gateway_is_measured:
            for pid in self.roles().get("gateway", []):
                pin(pid, split.server)

    # --- extra gateways -------------------------------------------------------------------

    @contextlib.contextmanager
    def extra_gateway(
        self, overrides: dict[str, str], workers: int, cpus: Sequence[int]
    ) -> Iterator[ExtraGateway]:
        """A gateway of `workers` processes on `cpus`, in front of this mesh's upstreams."""
        mesh = self.running
        port, ops_port = free_port(), free_port()
        ports = mesh.ports
        env = {
            **mesh.env,
            GATEWAY.port_var: str(port),
            GATEWAY.ops_port_var: str(ops_port),
            "MESH_USERS_ADDR": f"127.0.0.1:{ports[USERS.name]}",
            "MESH_CATALOG_ADDR": f"127.0.0.1:{ports[CATALOG.name]}",
            "MESH_ANALYTICS_ADDR": f"127.0.0.1:{ports[ANALYTICS.name]}",
            "MESH_CHAT_URL": f"http://127.0.0.1:{ports[CHAT.name]}",
            "MESH_REDIS_URL": self.redis_url,
            "MESH_GATEWAY_WORKERS": str(workers),
            "MESH_GATEWAY_POLICIES": str(E2E_POLICIES),
            "MESH_LOG_LEVEL": "warning",
            **overrides,
        }
        log = self.scratch / "gateways.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                taskset(cpus, [sys.executable, "-m", "gateway"]),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        gateway = ExtraGateway(f"http://127.0.0.1:{port}", process, workers)
        self._extra.append(gateway)
        try:
            try:
                wait_http(f"http://127.0.0.1:{ops_port}/health/ready", 60, process)
            except RuntimeError as error:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{error}; the gateways' log ends:\n{tail}") from None
            deadline = time.monotonic() + 60
            while len(listening_pids(port)) < workers:  # every worker has bound the port
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{workers} gateway workers did not start: see {log}")
                time.sleep(0.1)
            yield gateway
        finally:
            stop_process(process)
            self._extra.remove(gateway)
