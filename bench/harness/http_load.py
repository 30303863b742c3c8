"""Running `wrk` (closed loop, the throughput) and `hey` (paced, latency at a given rate).

Both are Debian packages (`apt-get install wrk hey`). Each run returns an `HttpLoad`:
requests, seconds, requests/s, p50/p99 in ms, errors (non-2xx/3xx answers and socket
errors) and the CPU seconds the generator itself used.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from bench.harness.cores import taskset
from bench.harness.procfs import run_child

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}

_WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([0-9.]+)(us|ms|s|m)\s*$", re.M)
_WRK_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_WRK_TOTAL = re.compile(r"(\d+) requests in ([0-9.]+)(us|ms|s|m),")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")

_HEY_LATENCY = re.compile(r"^\s+(50|99)% in ([0-9.]+) secs", re.M)
_HEY_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_HEY_TOTAL = re.compile(r"Total:\s+([0-9.]+) secs")
_HEY_STATUS = re.compile(r"^\s+\[(\d{3})\]\s+(\d+) responses", re.M)
_HEY_ERRORS = re.compile(r"^\s+\[(\d+)\]\s+(?!\d+ responses)", re.M)


@dataclass(frozen=True)
class HttpLoad:
    requests: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    generator_cpu_seconds: float


def available() -> str | None:
    """The generator this machine has: wrk, else hey, else None."""
    return next((tool for tool in ("wrk", "hey") if shutil.which(tool)), None)


def wrk(
    url: str,
    seconds: float,
    connections: int = 64,
    headers: Sequence[str] = (),
    cpus: Sequence[int] = (),
) -> HttpLoad:
    """`wrk --latency` on `url` for `seconds` (whole seconds, at least 1), one thread per
    CPU it runs on. `headers` are full lines (``"Origin: http://localhost:8080"``)."""
    threads = max(1, min(len(cpus) or 2, connections))
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    command.append("--latency")
    for header in headers:
        command += ["-H", header]
    result, cpu = run_child(
        taskset(cpus, [*command, url]) if cpus else [*command, url], seconds + 30
    )
    out = result.stdout
    rate, total = _WRK_RATE.search(out), _WRK_TOTAL.search(out)
    if rate is None or total is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}\n{result.stderr}")
    latency = {p: float(v) * _UNIT_MS[u] for p, v, u in _WRK_LATENCY.findall(out)}
    non_2xx = _WRK_NON_2XX.search(out)
    socket = _WRK_SOCKET.search(out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(n) for n in socket.groups()) if socket else 0
    return HttpLoad(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _UNIT_MS[total.group(3)] / 1000,
        requests_per_second=float(rate.group(1)),
        p50_ms=latency.get("50", float("nan")),
        p99_ms=latency.get("99", float("nan")),
        errors=errors,
        generator_cpu_seconds=cpu,
    )


def hey(
    url: str,
    seconds: float,
    connections: int = 64,
    headers: Sequence[str] = (),
    cpus: Sequence[int] = (),
    rate: float | None = None,
) -> HttpLoad:
    """`hey` on `url` for `seconds`; with `rate`, paced at that many requests/s in all
    (hey's ``-q`` is per connection)."""
    command = ["hey", "-z", f"{max(1, round(seconds))}s", "-c", str(connections)]
    if rate:
        command += ["-q", f"{rate / connections:.3f}"]
    for header in headers:
        command += ["-H", header]
    result, cpu = run_child(
        taskset(cpus, [*command, url]) if cpus else [*command, url], seconds + 30
    )
    out = result.stdout
    rate_found, total = _HEY_RATE.search(out), _HEY_TOTAL.search(out)
    if rate_found is None or total is None:
        raise RuntimeError(f"hey printed no rate:\n{out}\n{result.stderr}")
    latency = {p: float(v) * 1000 for p, v in _HEY_LATENCY.findall(out)}
    statuses = {int(code): int(n) for code, n in _HEY_STATUS.findall(out)}
    errors_section = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    failed = sum(int(n) for n in _HEY_ERRORS.findall(errors_section))
    bad = sum(n for code, n in statuses.items() if code >= 400)
    return HttpLoad(
        requests=sum(statuses.values()) + failed,
        seconds=float(total.group(1)),
        requests_per_second=float(rate_found.group(1)),
        p50_ms=latency.get("50", float("nan")),
        p99_ms=latency.get("99", float("nan")),
        errors=bad + failed,
        generator_cpu_seconds=cpu,
    )


def closed_loop(
    url: str,
    seconds: float,
    connections: int = 64,
    headers: Sequence[str] = (),
    cpus: Sequence[int] = (),
) -> HttpLoad:
    """As many requests as `connections` keep in flight: wrk, or hey without wrk."""
    if available() == "wrk":
        return wrk(url, seconds, connections, headers, cpus)
    return hey(url, seconds, connections, headers, cpus)
