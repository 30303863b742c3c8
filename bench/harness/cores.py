"""How the cores are split between the measured server, its upstreams and the load generator.

The measured server (gateway workers, the bare aiohttp baseline, nginx, the chat process...)
gets cores of its own; the upstreams it calls (catalog, Redis, PostgreSQL, the MongoDB-wire
server...) and the load generator (wrk, hey, the Python clients, this process when it is the
client) get the others. On two cores that is one core for the server and one shared by the
upstreams and the load; when the server runs as many processes as there are cores, nothing
can be kept apart and everything shares every core (the report says so).

Processes started from here get ``taskset -c`` in front; running ones (and their threads)
are moved with sched_setaffinity, which is what ``taskset -a -p`` does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness.procfs import descendants


def available_cpus() -> tuple[int, ...]:
    return tuple(sorted(os.sched_getaffinity(0)))


def cpu_list(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in cpus)


@dataclass(frozen=True)
class CoreSplit:
    server: tuple[int, ...]
    upstream: tuple[int, ...]
    load: tuple[int, ...]

    @classmethod
    def plan(cls, server_processes: int = 1, cpus: Sequence[int] | None = None) -> CoreSplit:
        """`server_processes` measured processes get that many cores; the rest is halved
        between upstreams and load (shared when only one core is left)."""
        cpus = tuple(cpus or available_cpus())
        if len(cpus) == 1 or server_processes >= len(cpus):
            return cls(cpus, cpus, cpus)
        server, rest = cpus[:server_processes], cpus[server_processes:]
        if len(rest) == 1:
            return cls(server, rest, rest)
        half = len(rest) // 2
        return cls(server, rest[:half], rest[half:])

    @property
    def shared(self) -> bool:
        return self.server == self.load

    def describe(self, server: str = "measured server") -> str:
        if self.shared:
            return (
                f"{server}, upstreams and load generator all share CPUs {cpu_list(self.server)}"
                " (no core left to keep them apart)"
            )
        if self.upstream == self.load:
            return (
                f"{server} on CPU {cpu_list(self.server)}; upstreams and the load generator "
                f"share CPU {cpu_list(self.load)}"
            )
        return (
            f"{server} on CPU {cpu_list(self.server)}; upstreams on CPU "
            f"{cpu_list(self.upstream)}; load generator on CPU {cpu_list(self.load)}"
        )

    def to_json(self) -> dict[str, list[int]]:
        return {
            "server": list(self.server),
            "upstream": list(self.upstream),
            "load": list(self.load),
        }


def taskset(cpus: Sequence[int], argv: Sequence[str]) -> list[str]:
    """`argv` started on `cpus` (``taskset -c``); as is without taskset."""
    if shutil.which("taskset") is None:
        return list(argv)
    return ["taskset", "-c", cpu_list(cpus), *argv]


def pin(pid: int, cpus: Sequence[int]) -> None:
    """Every thread of a running process onto `cpus` (new threads inherit it)."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except (ProcessLookupError, PermissionError, OSError):
            continue


def pin_tree(pid: int, cpus: Sequence[int]) -> None:
    """A process and everything below it."""
    for each in (pid, *descendants(pid)):
        pin(each, cpus)


def pin_self(cpus: Sequence[int]) -> tuple[int, ...]:
    """This process (every thread) onto `cpus`; the CPUs it had, to restore later."""
    before = tuple(sorted(os.sched_getaffinity(0)))
    pin(os.getpid(), cpus)
    return before
