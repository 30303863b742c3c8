"""Processes as Linux /proc shows them: CPU seconds, resident memory, children, commands."""

from __future__ import annotations

import os
import resource
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of a process."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def environment(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children...)."""
    found, queue = [], children(pid)
    while queue:
        child = queue.pop()
        found.append(child)
        queue += children(child)
    return found


def find_pid(marker: str, context: str, file: str = "cmdline") -> int | None:
    """A process whose command line holds `marker` and whose `file` (cmdline or environ)
    holds `context` (a data folder or namespace: other meshes may be running)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        where = command_line(pid) if file == "cmdline" else environment(pid)
        if marker in command_line(pid) and context in where:
            return pid
    return None


def by_role(pids: Iterable[int], roles: Mapping[str, str]) -> dict[str, list[int]]:
    """`pids` grouped by the first role whose marker their command line holds."""
    grouped: dict[str, list[int]] = {}
    for pid in pids:
        command = command_line(pid)
        for role, marker in roles.items():
            if marker in command:
                grouped.setdefault(role, []).append(pid)
                break
    return grouped


@dataclass
class CpuMeter:
    """CPU seconds of named groups of processes between `start()` and `stop()`."""

    groups: dict[str, list[int]]
    _before: dict[str, float] = field(default_factory=dict)

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> dict[str, float]:
        now = self._now()
        return {name: now[name] - self._before.get(name, 0.0) for name in now}


def run_child(
    argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a load generator to the end; its output and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} exited {result.returncode}:\n{result.stdout[-2000:]}\n"
            f"{result.stderr[-2000:]}"
        )
    return result, cpu


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
