"""A crash-looping service: the supervisor backs off, the gateway stays fast for the rest.

analytics is killed (SIGKILL) every time `mesh up` starts it again, `KILLS` times. The
supervisor's log must show the restart delays doubling from 0.5 s (0.5, 1, 2, 4, 8). While
analytics is down (the last, 8 s, delay), requests to its routes through the gateway get a
fast 503 (its breaker opens after the first few failures, then answers with Retry-After),
and the users and catalog routes keep their latency: p99 under `OTHER_P99_LIMIT`, p50 not
much above the baseline measured before the crash loop. Afterwards the supervisor brings
analytics back and its routes work again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from statistics import quantiles

import aiohttp
import pytest

from tests.e2e.client import Account, call, new_account
from tests.resilience.stack import FaultyMesh
from tests.resilience.tally import TALLY

KILLS = 5
EXPECTED_DELAYS = [0.5, 1.0, 2.0, 4.0, 8.0]
FAST_503 = 0.5  # seconds: a refused route must answer at least this fast (p99)
OTHER_P99_LIMIT = 1.0  # seconds: other routes' p99 while analytics is down

pytestmark = pytest.mark.timeout(180)


def _p(values: list[float], q: int) -> float:
    return quantiles(values, n=100, method="inclusive")[q - 1]


def _counts_url(faulty: FaultyMesh) -> str:
    now = dt.datetime.now(dt.UTC)
    start = (now - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (now + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{faulty.gateway}/api/v1/analytics/counts?type=page.view&from={start}&to={end}"


async def _timed(
    http: aiohttp.ClientSession, url: str, token: str
) -> tuple[float, int, dict[str, str], object]:
    started = time.monotonic()
    status, headers, body = await call(http, "GET", url, token)
    return time.monotonic() - started, status, dict(headers), body


async def _other_routes(
    faulty: FaultyMesh, http: aiohttp.ClientSession, user: Account, rounds: int
) -> list[float]:
    latencies = []
    for _ in range(rounds):
        for path in ("/api/v1/users/me", "/api/v1/products?pageSize=5"):
            url = f"{faulty.gateway}{path}"
            elapsed, status, _, body = await _timed(http, url, user.access_token)
            assert status == 200, body
            latencies.append(elapsed)
    return latencies


async def _wait_new_pid(faulty: FaultyMesh, old: int, timeout: float = 30) -> int:
    async with asyncio.timeout(timeout):
        while True:
            pids = faulty.mesh.child_pids().get("analytics", [])
            if pids and pids[-1] != old:
                return pids[-1]
            await asyncio.sleep(0.02)


async def test_crash_loop_backs_off_and_the_gateway_stays_fast(
    faulty: FaultyMesh, http: aiohttp.ClientSession
) -> None:
    user = await new_account(faulty.mesh, http)
    admin = await new_account(faulty.mesh, http, admin=True)
    _, status, _, body = await _timed(http, _counts_url(faulty), admin.access_token)
    assert status == 200, body
    baseline = await _other_routes(faulty, http, user, 20)

    pid = faulty.signal("analytics", signal.SIGKILL)
    for _ in range(KILLS - 1):  # each new process is killed as soon as it is started
        pid = await _wait_new_pid(faulty, pid)
        await asyncio.sleep(0.05)
        faulty.signal("analytics", signal.SIGKILL)
    await asyncio.sleep(0.3)  # the supervisor has logged the last exit
    last_exit = time.monotonic()

    # Analytics is down for the last delay (8 s): its routes and the others, side by side.
    refused: list[tuple[float, int, dict[str, str], object]] = []
    others: list[float] = []

    async def analytics_calls() -> None:
        while time.monotonic() - last_exit < 5:
            refused.append(await _timed(http, _counts_url(faulty), admin.access_token))
            await asyncio.sleep(0.1)

    async def other_calls() -> None:
        while time.monotonic() - last_exit < 5:
            others.extend(await _other_routes(faulty, http, user, 1))

    await asyncio.gather(analytics_calls(), other_calls())

    delays = [
        float(r["restart_in_seconds"])
        for r in faulty.mesh.records()
        if r.get("child") == "analytics" and "restart_in_seconds" in r
    ]
    refused_latency = [r[0] for r in refused]
    breaker_open = sum("circuit breaker open" in str(r[3]) for r in refused)
    figures = {
        "restart delays s": delays,
        "analytics calls while down": len(refused),
        "statuses": sorted({r[1] for r in refused}),
        "with Retry-After": sum("Retry-After" in r[2] for r in refused),
        "breaker open answers": breaker_open,
        "503 p50/p99 ms": (
            round(_p(refused_latency, 50) * 1000, 1),
            round(_p(refused_latency, 99) * 1000, 1),
        ),
        "other routes baseline p50/p99 ms": (
            round(_p(baseline, 50) * 1000, 1),
            round(_p(baseline, 99) * 1000, 1),
        ),
        "other routes while down p50/p99 ms": (
            round(_p(others, 50) * 1000, 1),
            round(_p(others, 99) * 1000, 1),
        ),
        "other routes calls while down": len(others),
    }
    print(f"\ncrash loop: {figures}")
    TALLY.tried("crash loop calls", len(refused) + len(others))
    TALLY.saw_server_errors(sum(r[1] >= 500 and r[1] != 503 for r in refused))

    assert delays[: len(EXPECTED_DELAYS)] == EXPECTED_DELAYS, delays
    assert len(refused) >= 10, figures
    assert {r[1] for r in refused} == {503}, figures
    # The first failures (which trip the breaker) are plain "unavailable" 503s; from then on
    # the open breaker answers, each time with Retry-After.
    assert breaker_open >= len(refused) - 6, figures
    assert all("Retry-After" in r[2] for r in refused if "circuit breaker open" in str(r[3]))
    assert _p(refused_latency, 99) < FAST_503, figures
    assert _p(others, 99) < OTHER_P99_LIMIT, figures
    assert _p(others, 50) < max(3 * _p(baseline, 50), 0.05), figures

    # The supervisor brings it back after the delay, and its routes work again.
    await asyncio.to_thread(faulty.wait_restarted, "analytics", pid, 60)
    async with asyncio.timeout(60):
        while True:
            _, status, _, _ = await _timed(http, _counts_url(faulty), admin.access_token)
            if status == 200:
                break
            await asyncio.sleep(0.2)
    TALLY.fault_survived("crash loop", KILLS)
