"""An upstream at 2 s latency (issue 11): the route's deadline fires, the upstream's breaker
opens, and another upstream's routes keep their latency.

The mesh runs one gateway process (so there is one breaker to watch) with the catalog routes
given a 1 s deadline (`latency_policies.toml`); 2 s of latency on every chunk the
gateway->catalog proxy passes makes each catalog call miss it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from mesh.harness import BackingUrls
from tests.e2e.client import call, mesh_cli, new_account
from tests.resilience.faultproxy import Latency, ProxyHost
from tests.resilience.stack import FaultyMesh, faulty_mesh
from tests.resilience.tally import TALLY

DEADLINE = 1.0  # the catalog group's timeout_seconds in latency_policies.toml
LATENCY_MS = 2000
BREAKER_FAILURES = 5
OPEN_SECONDS = 5


@pytest.fixture(scope="module")
def slow(
    backing: BackingUrls, proxies: ProxyHost, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultyMesh]:
    extra = {
        "MESH_GATEWAY_POLICIES": str(Path(__file__).with_name("latency_policies.toml")),
        "MESH_GATEWAY_WORKERS": "1",
        "MESH_GATEWAY_BREAKER_FAILURES": str(BREAKER_FAILURES),
        "MESH_GATEWAY_BREAKER_OPEN_SECONDS": str(OPEN_SECONDS),
    }
    with faulty_mesh(backing, tmp_path_factory.mktemp("slow-mesh"), proxies, extra) as running:
        yield running


async def _metric(http: aiohttp.ClientSession, port: int, name: str, labels: str = "") -> float:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {" and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def test_a_slow_upstream_hits_its_deadline_and_opens_its_breaker(
    slow: FaultyMesh, http: aiohttp.ClientSession
) -> None:
    code, output = await mesh_cli(slow.mesh, "seed", "--count", "10")
    assert code == 0, output
    account = await new_account(slow.mesh, http)
    me = f"{slow.gateway}/api/v1/users/me"
    products = f"{slow.gateway}/api/v1/products?pageSize=5"
    ops = slow.ops_port("gateway")
    status, _, _ = await call(http, "GET", products, account.access_token)
    assert status == 200

    async def other_route(until: float, into: list[float], statuses: Counter[int]) -> None:
        while time.monotonic() < until:
            started = time.monotonic()
            status, _, _ = await call(http, "GET", me, account.access_token)
            into.append(time.monotonic() - started)
            statuses[status] += 1

    # The other upstream's latency with nothing wrong, for comparison.
    baseline: list[float] = []
    baseline_statuses: Counter[int] = Counter()
    await asyncio.gather(
        *(other_route(time.monotonic() + 3, baseline, baseline_statuses) for _ in range(2))
    )

    deadline_before = await _metric(
        http, ops, "mesh_gateway_upstream_deadline_exceeded_total", 'upstream="catalog"'
    )
    slow_calls: list[tuple[int, float, str | None]] = []  # status, seconds, Retry-After
    during: list[float] = []
    during_statuses: Counter[int] = Counter()
    link = slow.links["gateway->catalog"]

    async def catalog_calls() -> None:
        # Sequential: the breaker counts failures in a row.
        for _ in range(BREAKER_FAILURES + 5):
            started = time.monotonic()
            status, headers, _ = await call(http, "GET", products, account.access_token)
            slow_calls.append((status, time.monotonic() - started, headers.get("Retry-After")))

    with link.toxic(Latency(LATENCY_MS)):
        started = time.monotonic()
        task = asyncio.create_task(catalog_calls())
        others = [
            asyncio.create_task(other_route(float("inf"), during, during_statuses))
            for _ in range(2)
        ]
        await task
        stop_at = time.monotonic()
        for other in others:
            other.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        breaker_state = await _metric(http, ops, "mesh_gateway_breaker_state", 'upstream="catalog"')
    fault_seconds = stop_at - started
    deadline_fired = (
        await _metric(
            http, ops, "mesh_gateway_upstream_deadline_exceeded_total", 'upstream="catalog"'
        )
        - deadline_before
    )
    TALLY.tried("slow-upstream catalog", len(slow_calls))
    TALLY.tried("slow-upstream other route", len(during) + len(baseline))
    print(
        f"\nslow upstream ({LATENCY_MS} ms, deadline {DEADLINE} s) for {fault_seconds:.1f} s:"
        f" catalog calls {[(s, round(t, 2)) for s, t, _ in slow_calls]};"
        f" deadline counter +{deadline_fired}; breaker state {breaker_state}\n"
        f"users route: baseline {len(baseline)} calls p50 {_p(baseline, 0.5) * 1000:.1f} ms"
        f" p99 {_p(baseline, 0.99) * 1000:.1f} ms; during {len(during)} calls"
        f" p50 {_p(during, 0.5) * 1000:.1f} ms p99 {_p(during, 0.99) * 1000:.1f} ms,"
        f" statuses {dict(during_statuses)}"
    )
    timed_out = slow_calls[:BREAKER_FAILURES]
    assert [s for s, _, _ in timed_out] == [504] * BREAKER_FAILURES, slow_calls
    for _, seconds, _ in timed_out:
        assert DEADLINE * 0.9 <= seconds <= DEADLINE + 0.75, f"504 after {seconds:.2f} s"
    assert deadline_fired >= BREAKER_FAILURES
    rejected = slow_calls[BREAKER_FAILURES:]
    assert [s for s, _, _ in rejected] == [503] * len(rejected), slow_calls
    for _, seconds, retry_after in rejected:
        assert seconds < 0.25, f"an open breaker took {seconds:.2f} s to answer"
        assert retry_after is not None
        assert int(retry_after) >= 1
    assert breaker_state == 2, "the catalog breaker is not open"
    assert during_statuses == {200: len(during)}, dict(during_statuses)
    assert len(during) >= 50, "too few calls on the other route during the fault"
    p99 = _p(during, 0.99)
    assert p99 < max(0.25, 5 * _p(baseline, 0.99)), f"users p99 {p99 * 1000:.0f} ms"

    # Healed: the breaker's probe after OPEN_SECONDS closes it again.
    recovered_at = None
    give_up = time.monotonic() + OPEN_SECONDS + 10
    while time.monotonic() < give_up:
        status, _, _ = await call(http, "GET", products, account.access_token)
        if status == 200:
            recovered_at = time.monotonic() - stop_at
            break
        assert status == 503
        await asyncio.sleep(0.25)
    assert recovered_at is not None, "the catalog routes never came back"
    print(f"catalog served again {recovered_at:.1f} s after the latency was removed")
    TALLY.fault_survived("upstream at 2 s latency")
