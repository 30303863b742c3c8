"""Child processes for the embedded backing services: spawn, readiness, graceful stop.

Every embedded server is a child started with `asyncio.create_subprocess_exec` in its own
session (a terminal's Ctrl-C reaches only the supervisor, which then orders the shutdown),
with stdout and stderr appended to `<data_dir>/logs/<name>.log`, and on Linux with a
parent-death signal (SIGTERM) so it dies when the supervisor is killed outright.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Final

from mesh.harness.ports import PortInUse, port_is_free

logger = logging.getLogger("mesh.harness")

STOP_TIMEOUT: Final = 5.0  # seconds between the graceful signal and SIGKILL
PROBE_TIMEOUT: Final = 2.0  # one readiness attempt
PROBE_INTERVAL: Final = 0.1


class BackingStartError(Exception):
    """An embedded server failed to start or to become ready."""

    def __init__(self, name: str, problem: str, log_path: Path) -> None:
        message = f"embedded {name} {problem}; see its log {log_path}"
        last = tail(log_path)
        if last:
            message += "\nlast lines of the log:\n" + "\n".join(f"  {line}" for line in last)
        super().__init__(message)
        self.name = name
        self.log_path = log_path


@dataclass(frozen=True, slots=True)
class RunAs:
    """An unprivileged system user a child runs as (the supervisor is root)."""

    name: str
    uid: int
    gid: int


def tail(path: Path, lines: int = 15) -> list[str]:
    """The last `lines` lines of a log file (empty if it does not exist)."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 8192))
            data = log.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def child_argv(argv: Sequence[str], run_as: RunAs | None = None) -> list[str]:
    """`argv` wrapped so the kernel sends SIGTERM when this process dies, and (as root) so
    it runs as `run_as`.

    util-linux's `setpriv` does both between fork and exec, outside Python: a Python
    `preexec_fn` is unsafe in a process with threads (gRPC's, the driver pools'), where a
    forked child can deadlock before it execs. Where `setpriv` is missing (not Linux) the
    child simply has no parent-death signal.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        if run_as is not None:
            raise RuntimeError("running a child as another user needs setpriv (util-linux)")
        return list(argv)
    prefix = [setpriv]
    if run_as is not None:
        prefix += ["--reuid", str(run_as.uid), "--regid", str(run_as.gid), "--clear-groups"]
    return [*prefix, "--pdeathsig", "TERM", "--", *argv]


async def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    run_as: RunAs | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start `argv` in a new session, its output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"--- {stamp} mesh.harness: {shlex.join(argv)}\n".encode())
        log.flush()
        return await asyncio.create_subprocess_exec(
            *child_argv(argv, run_as),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def stop_process(
    process: asyncio.subprocess.Process, sig: signal.Signals, timeout: float = STOP_TIMEOUT
) -> bool:
    """Send `sig`, wait up to `timeout`, then SIGKILL the child's process group.

    Returns True if the child exited on its own after `sig`.
    """
    if process.returncode is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        await asyncio.wait_for(process.wait(), timeout)
        return True
    except TimeoutError:
        _kill_group(process.pid)
        await process.wait()
        return False
    except asyncio.CancelledError:
        _kill_group(process.pid)
        raise


def _proc_args(pid: int) -> list[str] | None:
    """The command line of a live (non-zombie) process, or None (not Linux, or gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return None
    return [arg.decode("utf-8", "replace") for arg in raw.split(b"\0") if arg]


async def stop_stale(name: str, pid: int, marker: str, sig: signal.Signals) -> bool:
    """Stop a server left running by an earlier, killed supervisor.

    Only a live process whose command line has `marker` (its data directory) as an argument
    is touched, so a recycled pid is never signalled. Returns True if one was stopped.
    """
    args = _proc_args(pid)
    if pid <= 0 or pid == os.getpid() or args is None or marker not in args:
        return False
    logger.warning("embedded %s: stopping a stale server (pid %d) from an earlier run", name, pid)
    for signal_to_send in (sig, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_to_send)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if _proc_args(pid) is None:
                return True
            await asyncio.sleep(0.05)
    return _proc_args(pid) is None


class EmbeddedServer(abc.ABC):
    """One embedded backing server run as a child process; `start()` again to restart it.

    Data lives in `data_dir/<name>`, the log in `data_dir/logs/<name>.log`.
    """

    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    ready_timeout: ClassVar[float]

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int) -> None:
        self.data_dir = data_dir.absolute()
        self.host = host
        self.port = port
        self.process: asyncio.subprocess.Process | None = None

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The URL clients use."""

    @property
    def path(self) -> Path:
        """This server's own data directory."""
        return self.data_dir / self.name

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "run" / f"{self.name}.pid"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @abc.abstractmethod
    async def _prepare(self) -> str:
        """Blocking-free setup before the spawn; returns a note for the ready log line."""

    @abc.abstractmethod
    def _argv(self) -> list[str]: ...

    @abc.abstractmethod
    async def _probe(self) -> None:
        """Raise unless the server answers its own protocol."""

    def _run_as(self) -> RunAs | None:
        return None

    def _env(self) -> Mapping[str, str] | None:
        return None

    def _stale_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    async def stop_stale(self) -> None:
        """Stop this server's process left over from an earlier, killed run, if any."""
        pid = self._stale_pid()
        if pid is not None and not self.running:
            await stop_stale(self.name, pid, str(self.path), self.stop_signal)

    def check_port(self) -> None:
        if not port_is_free(self.host, self.port):
            raise PortInUse(self.name, self.host, self.port)

    async def start(self) -> None:
        """Start the child and wait until it answers; a no-op when it is already running."""
        if self.running:
            return
        began = time.monotonic()
        await self.stop_stale()
        self.check_port()
        note = await self._prepare()
        self.process = await spawn(
            self._argv(), self.log_path, run_as=self._run_as(), cwd=self.path, env=self._env()
        )
        try:
            self.pid_path.parent.mkdir(parents=True, exist_ok=True)
            self.pid_path.write_text(f"{self.process.pid}\n")
            await self._wait_ready(self.process)
        except BaseException:
            await self._halt()
            raise
        logger.info(
            "embedded %s ready on %s:%d in %.1f s%s",
            self.name,
            self.host,
            self.port,
            time.monotonic() - began,
            f" ({note})" if note else "",
        )

    async def _wait_ready(self, process: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if process.returncode is not None:
                raise BackingStartError(
                    self.name,
                    f"exited with code {process.returncode} while starting",
                    self.log_path,
                )
            try:
                await asyncio.wait_for(self._probe(), PROBE_TIMEOUT)
                return
            except Exception as error:  # not up yet: refused, starting up, timeout, ...
                last_error = error
            if time.monotonic() >= deadline:
                raise BackingStartError(
                    self.name,
                    f"did not answer within {self.ready_timeout:.0f} s"
                    f" (last error: {type(last_error).__name__}: {last_error})",
                    self.log_path,
                )
            await asyncio.sleep(PROBE_INTERVAL)

    async def _halt(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            await stop_process(process, self.stop_signal)
        with contextlib.suppress(OSError):
            self.pid_path.unlink()

    async def stop(self) -> None:
        """Stop gracefully (SIGKILL after a timeout); a no-op when not started."""
        process = self.process
        if process is None:
            return
        if process.returncode is not None:
            logger.warning(
                "embedded %s had already exited with code %d", self.name, process.returncode
            )
            await self._halt()
            return
        began = time.monotonic()
        graceful = await stop_process(process, self.stop_signal)
        await self._halt()
        elapsed = time.monotonic() - began
        if graceful:
            logger.info("embedded %s stopped in %.1f s", self.name, elapsed)
        else:
            logger.warning("embedded %s killed after %.1f s (no graceful exit)", self.name, elapsed)
