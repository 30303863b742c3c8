"""`python -m gateway --workers N`: N gateway processes serving one port (SO_REUSEPORT).

Python runs one core's worth of event loop per process, so the gateway scales on a machine
by processes: with N > 1 (``--workers N``, else ``MESH_GATEWAY_WORKERS``, default one per
core) ``python -m gateway`` becomes a small parent that

* checks the settings and that both ports are free (one line on stderr and exit 78 if not,
  before anything starts);
* makes a fresh directory for prometheus_client's multiprocess mode and starts N workers:
  ``python -m gateway`` with ``MESH_GATEWAY_WORKERS=1``, ``MESH_GATEWAY_WORKER_INDEX=i``
  (1..N) and ``PROMETHEUS_MULTIPROC_DIR`` set; each binds the API port and the ops port
  with SO_REUSEPORT, so the kernel spreads new connections over them, and any worker's
  ``/metrics`` reports all of them (`mesh.ops`); ``/health/ready`` answers for the worker
  that gets the probe. A ``MESH_INSTANCE_ID`` given to the parent becomes
  ``<id>-<i>`` in worker i (the default, ``<host>-<pid>``, differs per worker anyway);
* forwards SIGTERM and SIGINT to the workers and exits when they have stopped: 0 when all
  of them exited 0; workers still running ``grace + 2 s`` after the signal are killed;
* when a worker ends on its own, stops the others and exits with 78 when that worker
  could not start for good (EX_CONFIG), else 1, so whoever runs the gateway (``mesh up``,
  the orchestrator) restarts it whole;
* removes the metrics directory at exit.

Workers get a parent-death signal (SIGTERM, through util-linux's ``setpriv`` where it
exists), so none outlives a parent killed outright; they stay in the parent's process
group, so signalling the group reaches all of them.

Multiprocess metrics have no exemplars (the trace ids on latency histograms), so
containers run one gateway process each (``MESH_GATEWAY_WORKERS=1``) and scale by replicas;
``--workers`` is for a machine of its own (and `mesh up`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Final, NoReturn

from prometheus_client import multiprocess

from gateway.settings import GatewaySettings
from mesh.common import CommonSettings
from mesh.logs import configure_logging
from mesh.netbind import port_in_use, port_is_free
from mesh.ops import MULTIPROC_DIR_VAR
from mesh.runner import EX_CONFIG
from mesh.settings import Env, SettingsError
from mesh.topology import GATEWAY

WORKERS_VAR: Final = "MESH_GATEWAY_WORKERS"
WORKER_INDEX_VAR: Final = "MESH_GATEWAY_WORKER_INDEX"
"""Set by the parent in each worker (1..N); a process with it serves with SO_REUSEPORT."""
INSTANCE_ID_VAR: Final = "MESH_INSTANCE_ID"
STOP_MARGIN_SECONDS: Final = 2.0

log = logging.getLogger("gateway.workers")


def worker_index(env: Env) -> int | None:
    """This process's worker number when a `--workers` parent started it, else None."""
    raw = env.raw(WORKER_INDEX_VAR)
    return int(raw) if raw and raw.isdigit() else None


def worker_env(environ: Mapping[str, str], index: int, metrics_dir: str) -> dict[str, str]:
    env = {
        **environ,
        WORKERS_VAR: "1",
        WORKER_INDEX_VAR: str(index),
        MULTIPROC_DIR_VAR: metrics_dir,
    }
    instance = environ.get(INSTANCE_ID_VAR, "").strip()
    if instance:
        env[INSTANCE_ID_VAR] = f"{instance}-{index}"
    return env


def worker_argv() -> list[str]:
    """``python -m gateway``, with a parent-death SIGTERM where util-linux's setpriv is.

    setpriv sets it between fork and exec, outside Python (see `mesh.harness.process`).
    """
    argv = [sys.executable, "-m", "gateway"]
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else argv


class WorkerPool:
    """N workers started together, stopped together."""

    def __init__(self, count: int, environ: Mapping[str, str], stop_timeout: float) -> None:
        self._count = count
        self._environ = dict(environ)
        self._stop_timeout = stop_timeout
        self._stop = asyncio.Event()
        self.metrics_dir = tempfile.mkdtemp(prefix="mesh-gateway-metrics-")
        self.processes: list[asyncio.subprocess.Process] = []

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Start the workers, wait until a stop is asked for or one ends; the exit code."""
        try:
            for index in range(1, self._count + 1):
                process = await asyncio.create_subprocess_exec(
                    *worker_argv(), env=worker_env(self._environ, index, self.metrics_dir)
                )
                self.processes.append(process)
                log.info("started worker %d", index, extra={"pid": process.pid})
            code = await self._until_stop_or_exit()
        finally:
            await self._stop_all()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        if code == 0 and any(p.returncode != 0 for p in self.processes):
            code = 1
        return code

    async def _until_stop_or_exit(self) -> int:
        stop = asyncio.create_task(self._stop.wait())
        exits = {asyncio.create_task(p.wait()): p for p in self.processes}
        try:
            done, _ = await asyncio.wait({stop, *exits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stop, *exits):
                task.cancel()
        if stop in done:
            return 0
        ended = next(exits[t] for t in done if t in exits)
        index = self.processes.index(ended) + 1
        log.error(
            "worker %d exited with code %s: stopping the others",
            index,
            ended.returncode,
            extra={"pid": ended.pid, "exit_code": ended.returncode},
        )
        return EX_CONFIG if ended.returncode == EX_CONFIG else 1

    async def _stop_all(self) -> None:
        running = [p for p in self.processes if p.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), self._stop_timeout)
        except TimeoutError:
            for process in self.processes:
                if process.returncode is None:
                    log.warning(
                        "worker did not stop in time: killing it", extra={"pid": process.pid}
                    )
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(p.wait() for p in self.processes))
        for process in self.processes:
            multiprocess.mark_process_dead(process.pid, self.metrics_dir)  # type: ignore[no-untyped-call]


def _fail(message: str, code: int) -> NoReturn:
    print(f"{GATEWAY.name}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def run_workers(count: int, env: Env, environ: Mapping[str, str]) -> NoReturn:
    """The parent of `count` workers (see the module's docstring); exits with their code."""
    try:
        common = CommonSettings.from_env(env, GATEWAY)
        GatewaySettings.from_env(env)  # a bad setting stops here, once, not in N workers
    except SettingsError as exc:
        _fail(str(exc), EX_CONFIG)
    for port, variable in ((common.port, common.port_var), (common.ops_port, common.ops_port_var)):
        if not port_is_free(common.host, port):
            _fail(str(port_in_use(variable, common.host, port)), EX_CONFIG)
    configure_logging(GATEWAY.name, common.log_level)
    pool = WorkerPool(count, environ, common.grace_seconds + STOP_MARGIN_SECONDS)

    async def supervise() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pool.request_stop)
        return await pool.run()

    code = asyncio.run(supervise())
    log.info("workers stopped", extra={"exit_code": code})
    sys.exit(code)


def parse_workers(argv: Sequence[str]) -> int | None:
    """``--workers N`` from the command line (None when absent)."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="The mesh's API gateway.",
    )
    parser.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        metavar="N",
        help=f"gateway processes sharing the port (default: {WORKERS_VAR}, else one per core)",
    )
    workers: int | None = parser.parse_args(argv).workers
    return workers


def _worker_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError("expected a whole number from 1 to 256")
    return int(text)
