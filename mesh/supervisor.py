"""`mesh up`: the local supervisor behind `make run`.

It checks every port first, starts the backing services that have no configured URL
(`mesh.harness`), applies the migrations, starts the five processes as children (each in
its own session, so a terminal's Ctrl-C reaches only the supervisor, which orders the
shutdown), waits until each reports ready on its ops port, prints the URLs and stays in the
foreground. A child that dies is restarted with exponential backoff (0.5 s doubling to
30 s, reset after 30 s of good health) and the restart is logged. SIGINT or SIGTERM stops
the children (gateway first), then the backing services, and exits 0.

The gateway runs ``MESH_GATEWAY_WORKERS`` processes (default: one per core) behind one
``python -m gateway`` parent (`gateway.workers`): the supervisor sees only the parent, waits
for readiness on the shared ops port (any worker answers), and stops it with SIGTERM, which
the parent passes to its workers; a child that does not stop in time is killed with its
whole process group, so no worker outlives it.

A process whose spec allows replicas (chat) runs ``MESH_<NAME>_REPLICAS`` copies, named
``chat-1``, ``chat-2``...: on consecutive ports from ``MESH_CHAT_PORT`` and
``MESH_CHAT_OPS_PORT``, or on the ports listed in ``MESH_CHAT_PORTS`` and
``MESH_CHAT_OPS_PORTS``. Each is a child of its own (readiness waited for, restarted on its
own), and the gateway gets all of their URLs in ``MESH_CHAT_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from mesh.backing_settings import MONGO_VAR, POSTGRES_VAR, REDIS_VAR, StoreUrls
from mesh.harness import BackingConfig, BackingStartError, PortInUse, backing_services
from mesh.harness.process import child_argv
from mesh.migrate import migrate_all
from mesh.netbind import port_is_free
from mesh.runner import EX_CONFIG
from mesh.settings import Env, SettingsError
from mesh.topology import PROCESSES, ProcessSpec

log = logging.getLogger("mesh.up")

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
HEALTHY_RESET_SECONDS = 30.0
READY_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 8.0


class FatalStartError(Exception):
    """The mesh cannot start; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    spec: ProcessSpec
    host: str
    port: int
    ops_port: int
    replica: int = 0  # 0-based
    replicas: int = 1

    @property
    def name(self) -> str:
        return self.spec.name if self.replicas == 1 else f"{self.spec.name}-{self.replica + 1}"

    @property
    def port_source(self) -> str:
        return self.spec.port_var if self.replica == 0 else f"{self.spec.port_var}+{self.replica}"

    @property
    def ops_port_source(self) -> str:
        var = self.spec.ops_port_var
        return var if self.replica == 0 else f"{var}+{self.replica}"

    def child_env(self) -> dict[str, str]:
        """The port variables this child serves on (a replica's own, not the base ones)."""
        return {self.spec.port_var: str(self.port), self.spec.ops_port_var: str(self.ops_port)}


def _port_list(env: Env, name: str) -> tuple[int, ...]:
    items = [p.strip() for p in env.str(name, "").split(",") if p.strip()]
    if not all(p.isdigit() and 0 < int(p) < 65536 for p in items):
        raise SettingsError(name, "expected port numbers separated by commas")
    return tuple(int(p) for p in items)


def _endpoints(env: Env, host: str, spec: ProcessSpec) -> list[Endpoint]:
    port = env.port(spec.port_var, spec.port)
    ops_port = env.port(spec.ops_port_var, spec.ops_port)
    if spec.max_replicas == 1:
        return [Endpoint(spec, host, port, ops_port)]
    ports, ops_ports = _port_list(env, spec.ports_var), _port_list(env, spec.ops_ports_var)
    default = len(ports) or 1
    replicas = env.int(spec.replicas_var, default, minimum=1, maximum=spec.max_replicas)
    for name, listed in ((spec.ports_var, ports), (spec.ops_ports_var, ops_ports)):
        if listed and len(listed) != replicas:
            raise SettingsError(name, f"expected {replicas} ports ({spec.replicas_var})")
    ports = ports or tuple(port + i for i in range(replicas))
    ops_ports = ops_ports or tuple(ops_port + i for i in range(replicas))
    if max(ports + ops_ports) > 65535:
        raise SettingsError(spec.replicas_var, "the replicas' ports would pass 65535")
    return [
        Endpoint(spec, host, ports[i], ops_ports[i], replica=i, replicas=replicas)
        for i in range(replicas)
    ]


@dataclass(frozen=True, slots=True)
class UpSettings:
    data_dir: Path
    host: str
    endpoints: tuple[Endpoint, ...]
    backing: BackingConfig
    namespace: str

    @classmethod
    def from_env(cls, env: Env) -> UpSettings:
        data_dir = Path(env.str("MESH_DATA_DIR", ".mesh")).resolve()
        host = env.str("MESH_HOST", "127.0.0.1")
        endpoints = tuple(e for p in PROCESSES for e in _endpoints(env, host, p))
        return cls(
            data_dir,
            host,
            endpoints,
            BackingConfig.from_env(env, data_dir),
            StoreUrls.from_env(env).namespace,
        )


@dataclass
class Child:
    endpoint: Endpoint
    env: Mapping[str, str]
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_START
    was_ready: bool = False
    fatal: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.endpoint.name

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *child_argv([sys.executable, "-m", self.endpoint.spec.module]),
            env={**self.env, **self.endpoint.child_env()},
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        log.info("started %s", self.name, extra={"pid": self.process.pid})

    async def stop(self, timeout: float) -> int | None:
        process = self.process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            log.warning("%s did not stop within %.0f s: killing it", self.name, timeout)
            # Its whole process group (it leads its own session): a gateway's workers too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return await process.wait()


def _busy_ports(settings: UpSettings) -> list[str]:
    busy = []
    for e in settings.endpoints:
        for port, var, what in (
            (e.port, e.port_source, e.spec.kind),
            (e.ops_port, e.ops_port_source, "ops"),
        ):
            if not port_is_free(e.host, port):
                busy.append(f"{e.name} {what} port {port} ({var}) is already in use")
    return busy


class Supervisor:
    def __init__(self, settings: UpSettings) -> None:
        self._settings = settings
        self._children: list[Child] = []
        self._stopping = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> int:
        busy = _busy_ports(self._settings)
        if busy:
            raise FatalStartError("; ".join(busy))
        self._settings.data_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            async with backing_services(self._settings.backing) as urls:
                if self._stopping.is_set():
                    return 0
                applied = await migrate_all(urls.postgres_dsn, self._settings.namespace)
                log.info("migrations applied", extra={"applied": applied})
                env = {
                    **self._upstream_addresses(),
                    **os.environ,
                    POSTGRES_VAR: urls.postgres_dsn,
                    REDIS_VAR: urls.redis_url,
                    MONGO_VAR: urls.mongo_url,
                    "PYTHONUNBUFFERED": "1",
                }
                self._children = [Child(e, env) for e in self._settings.endpoints]
                try:
                    await self._start_children()
                    if not self._stopping.is_set():
                        self._print_banner(time.monotonic() - started)
                        await self._stopping.wait()
                finally:
                    await self._stop_children()
        except (PortInUse, BackingStartError) as exc:
            raise FatalStartError(str(exc)) from None
        log.info("mesh stopped")
        return 0

    def _upstream_addresses(self) -> dict[str, str]:
        """Where the gateway finds the children started here (an explicit setting wins)."""
        addresses: dict[str, list[str]] = {}
        for e in self._settings.endpoints:
            if e.spec.kind == "grpc":
                addresses.setdefault(f"{e.spec.env_prefix}_ADDR", []).append(f"{e.host}:{e.port}")
            elif e.spec.name == "chat":
                url = f"http://{e.host}:{e.port}"
                addresses.setdefault(f"{e.spec.env_prefix}_URL", []).append(url)
        return {name: ",".join(values) for name, values in addresses.items()}

    async def _start_children(self) -> None:
        for child in self._children:
            await child.start()
            watcher = asyncio.create_task(self._watch(child), name=f"watch-{child.name}")
            watcher.add_done_callback(self._watcher_done)
            self._watchers.append(watcher)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            waits = [asyncio.create_task(self._wait_ready(session, c)) for c in self._children]
            stop = asyncio.create_task(self._stopping.wait())
            fatal = [asyncio.create_task(c.fatal.wait()) for c in self._children]
            try:
                pending: set[asyncio.Task[object]] = {*waits, stop, *fatal}
                while not all(w.done() for w in waits):
                    done, pending = await asyncio.wait(
                        pending, timeout=READY_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED
                    )
                    if not done:
                        slow = [
                            c.name
                            for c, w in zip(self._children, waits, strict=True)
                            if not w.done()
                        ]
                        raise FatalStartError(
                            f"not ready after {READY_TIMEOUT_SECONDS:.0f} s: {', '.join(slow)}"
                        )
                    if stop in done:
                        return
                    for child in self._children:
                        if child.fatal.is_set():
                            raise FatalStartError(
                                f"{child.name} cannot start (see its message "
                                "above); stopping the others"
                            )
            finally:
                for task in (*waits, stop, *fatal):
                    task.cancel()

    async def _wait_ready(self, session: aiohttp.ClientSession, child: Child) -> None:
        e = child.endpoint
        url = f"http://{e.host}:{e.ops_port}/health/ready"
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        child.was_ready = True
                        log.info("%s ready", child.name)
                        return
            await asyncio.sleep(0.1)

    def _watcher_done(self, task: asyncio.Task[None]) -> None:
        """A watcher that fails would leave its child unwatched: stop the mesh loudly."""
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())
            self.request_stop()

    async def _watch(self, child: Child) -> None:
        while True:
            assert child.process is not None
            code = await child.process.wait()
            if self._stopping.is_set():
                return
            if code == EX_CONFIG and not child.was_ready:
                child.fatal.set()
                return
            if time.monotonic() - child.started_at > HEALTHY_RESET_SECONDS:
                child.backoff = BACKOFF_START
            log.warning(
                "%s exited with code %s; restarting in %.1f s",
                child.name,
                code,
                child.backoff,
                extra={
                    "child": child.name,
                    "exit_code": code,
                    "restart_in_seconds": child.backoff,
                },
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), child.backoff)
            if self._stopping.is_set():
                return
            child.backoff = min(child.backoff * 2, BACKOFF_MAX)
            child.restarts += 1
            await child.start()

    async def _stop_children(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        # The gateway first (it is last in start order), so no request hits a stopped service.
        ordered = list(reversed(self._children))
        gateway, rest = ordered[:1], ordered[1:]
        for group in (gateway, rest):
            codes = await asyncio.gather(*(c.stop(STOP_TIMEOUT_SECONDS) for c in group))
            for child, code in zip(group, codes, strict=True):
                log.info("%s exited with code %s", child.name, code)

    def _print_banner(self, elapsed: float) -> None:
        lines = [f"\nthe mesh is ready in {elapsed:.1f} s"]
        for e in self._settings.endpoints:
            scheme = "http" if e.spec.kind == "http" else "grpc"
            lines.append(
                f"  {e.name:<10} {scheme}://{e.host}:{e.port:<6} "
                f"ops http://{e.host}:{e.ops_port}/health/ready"
            )
        gateway = next(e for e in self._settings.endpoints if e.spec.name == "gateway")
        lines.append(
            f"\n  gateway:  http://{gateway.host}:{gateway.port}   (web console; API docs: "
            f"http://{gateway.host}:{gateway.port}/docs, OpenAPI: /openapi.json)"
        )
        lines.append("  Ctrl-C stops everything.\n")
        print("\n".join(lines), flush=True)


async def up(settings: UpSettings) -> int:
    supervisor = Supervisor(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.request_stop)
    return await supervisor.run()
