"""Scenario: analytics ingestion - correctness of the four queries, and events per second.

Starts a mesh (`mesh up` on free loopback ports; MongoDB is the embedded MongoDB-wire server
unless MESH_MONGO_URL is set) and:

1. Correctness, through the gateway: generates `--events` events (default 100,000) of
   `events // 200` users in user sessions (page.view -> product.view -> cart.add ->
   checkout.start -> order.placed with drop-off), over four days that include the end of
   summer time in Europe/Berlin. 5% of the events sent are deliberate duplicates (an event
   sent again, in a later batch or a concurrent one) and the batches go out in random order
   (so timestamps arrive out of order). Each user's events go in batches of up to 100 with
   that user's token, `--concurrency` batches in flight. Then counts (hour/Europe/Berlin,
   day/America/New_York, minute/UTC over 6 hours), top (two properties), uniques (hour and
   day) and funnels (two windows) are asked through the gateway and compared with the answers
   `bench.analytics_reference` computes from the generated data: they must be equal, exactly.
2. Throughput at the service alone: `--service-events` more events straight to the
   analytics gRPC port, batches of 100, same concurrency.
3. For both: events/s, and where the time goes, from the services' own Prometheus
   metrics (`analytics_store_operation_seconds{operation="insert_events"}`: time waiting for
   insert_many, against `mesh_grpc_server_handling_seconds` of IngestEvents: the whole call)
   and the CPU seconds of each process (analytics, gateway, the MongoDB-wire server, this
   load generator) per 1,000 events.

In `python -m bench` (scenario 4, `measure`) only the rates are measured, with
repetitions, on the shared mesh: through the gateway, and at the service alone as the
baseline (the ratio is the headline); the query checks stay in this module's own run.

    python -m bench.analytics_ingest [--events 100000] [--service-events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import re
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import uvloop
from google.protobuf import json_format

from bench import analytics_reference as reference
from bench.harness.cores import CoreSplit, pin_self
from bench.harness.mesh import SharedMesh, store_overrides
from bench.harness.procfs import CpuMeter, cpu_seconds, find_pid
from bench.harness.report import Row, ScenarioResult, Table, headline
from bench.harness.runner import Context, Scenario
from bench.harness.stats import Figure, column, paired
from mesh.auth.keys import load_or_create_keys
from mesh.auth.tokens import TokenIssuer, TokenSettings
from protos.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from tests.e2e.mesh_process import MeshProcess, mesh_env, start_mesh

START = datetime(2026, 10, 23, tzinfo=UTC)
END = datetime(2026, 10, 27, tzinfo=UTC)
FUNNEL = ("page.view", "product.view", "cart.add", "checkout.start", "order.placed")
PATHS = tuple(f"/{section}/{n}" for section in ("home", "shop", "blog", "help") for n in range(8))
SKUS = tuple(f"SKU-{n:03d}" for n in range(60))
PLANS = ("free", "pro", "team", "enterprise")
BATCH = 100


@dataclass
class Generated:
    rows: list[reference.Row]  # every distinct event, as stored
    batches: list[tuple[str, list[dict[str, Any]]]]  # (user, events JSON) in sending order
    sent: int
    duplicates: int
    out_of_order: int  # events sent right after an event of the same user with a later time


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _properties(rng: random.Random, type_: str) -> dict[str, Any]:
    if type_ == "page.view":
        return {"path": rng.choice(PATHS), "plan": rng.choice(PLANS)}
    if type_ in ("product.view", "cart.add"):
        return {"sku": rng.choice(SKUS[: rng.randint(5, len(SKUS))]), "qty": rng.randint(1, 3)}
    return {"plan": rng.choice(PLANS)}


def generate(count: int, seed: int = 7) -> Generated:
    rng = random.Random(seed)
    duplicates = count * 5 // 100
    unique = count - duplicates
    users = [
        str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(max(1, count // 200))
    ]
    span_ms = int((END - START).total_seconds() * 1000)
    rows: list[reference.Row] = []
    ids: list[str] = []
    while len(rows) < unique:
        user = rng.choice(users)
        ts = START + timedelta(milliseconds=rng.randrange(span_ms))
        for depth, type_ in enumerate(FUNNEL):
            if len(rows) == unique or (depth and rng.random() < 0.35) or ts >= END:
                break
            rows.append(reference.Row(type_, ts, user, _properties(rng, type_)))
            ids.append(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
            # The next step: mostly within minutes, sometimes hours later.
            gap = rng.expovariate(1 / 600) if rng.random() < 0.8 else rng.uniform(3600, 30000)
            ts += timedelta(milliseconds=int(gap * 1000))
    by_user: dict[str, list[tuple[str, reference.Row]]] = {}
    for event_id, row in zip(ids, rows, strict=True):
        by_user.setdefault(row.user or "", []).append((event_id, row))
    for index in rng.sample(range(unique), duplicates):  # each sent a second time, later
        by_user[rows[index].user or ""].append((ids[index], rows[index]))
    batches, out_of_order = [], 0
    for user, events in by_user.items():
        events.sort(key=lambda item: item[1].ts)
        for _ in range(len(events) // 10):  # a tenth sent later than their clock order says
            events.insert(rng.randrange(len(events)), events.pop(rng.randrange(len(events))))
        for (_, earlier), (_, later) in itertools.pairwise(events):
            out_of_order += later.ts < earlier.ts
        for at in range(0, len(events), BATCH):
            chunk = events[at : at + BATCH]
            batches.append(
                (
                    user,
                    [
                        {
                            "eventId": event_id,
                            "type": row.type,
                            "timestamp": _iso(row.ts),
                            "properties": row.properties,
                        }
                        for event_id, row in chunk
                    ],
                )
            )
    rng.shuffle(batches)  # users' batches interleaved, and a duplicate may race its original
    return Generated(rows, batches, count, duplicates, out_of_order)


# --- measuring ----------------------------------------------------------------------------


@dataclass
class Probe:
    """CPU seconds of the processes that do the work, and the analytics service's metrics."""

    pids: dict[str, int]
    metrics_url: str
    cpu: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    async def snapshot(self, http: aiohttp.ClientSession) -> Probe:
        taken = Probe(self.pids, self.metrics_url)
        taken.cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        taken.cpu["load generator"] = sum(os.times()[:2])
        async with http.get(self.metrics_url) as response:
            taken.metrics = _metric_sums(await response.text())
        return taken


_METRIC = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def _metric_sums(text: str) -> dict[str, float]:
    wanted = {
        ("analytics_store_operation_seconds_sum", 'operation="insert_events"'): "insert_seconds",
        ("analytics_store_operation_seconds_count", 'operation="insert_events"'): "inserts",
        ("mesh_grpc_server_handling_seconds_sum", 'grpc_method="IngestEvents"'): "call_seconds",
        ("mesh_grpc_server_handling_seconds_count", 'grpc_method="IngestEvents"'): "calls",
    }
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC.match(line)
        if not match:
            continue
        for (name, label), key in wanted.items():
            if match["name"] == name and label in match["labels"]:
                found[key] = float(match["value"])
    return found


def report(
    label: str, events: int, seconds: float, before: Probe, after: Probe
) -> dict[str, float]:
    results = {f"{label}_events_per_second": events / seconds, f"{label}_seconds": seconds}
    call = after.metrics.get("call_seconds", 0) - before.metrics.get("call_seconds", 0)
    insert = after.metrics.get("insert_seconds", 0) - before.metrics.get("insert_seconds", 0)
    calls = after.metrics.get("calls", 0) - before.metrics.get("calls", 0)
    if calls:
        results[f"{label}_ingest_call_ms_mean"] = call / calls * 1000
        results[f"{label}_insert_many_ms_mean"] = insert / calls * 1000
        results[f"{label}_insert_many_share_of_call_pct"] = 100 * insert / call if call else 0
    for name in after.cpu:
        used = after.cpu[name] - before.cpu.get(name, 0)
        key = name.replace(" ", "_").replace("-", "_")
        results[f"{label}_cpu_{key}_pct_of_one_core"] = 100 * used / seconds
        results[f"{label}_cpu_{key}_ms_per_1000_events"] = 1000 * used / events * 1000
    return results


async def run_bounded(jobs: Sequence[Callable[[], Awaitable[None]]], concurrency: int) -> float:
    """Run the jobs with `concurrency` in flight; the seconds it took."""
    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue:
            await queue.pop()()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


# --- the scenario -------------------------------------------------------------------------


@dataclass
class Totals:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


async def ingest_through_gateway(
    http: aiohttp.ClientSession,
    base: str,
    issuer: TokenIssuer,
    generated: Generated,
    concurrency: int,
) -> tuple[float, Totals]:
    tokens = {user: issuer.issue(user, ["user"]) for user, _ in generated.batches}
    totals = Totals()

    def job(user: str, events: list[dict[str, Any]]) -> Callable[[], Awaitable[None]]:
        async def send() -> None:
            async with http.post(
                f"{base}/api/v1/analytics/events:batch",
                json={"events": events},
                headers={"Authorization": f"Bearer {tokens[user]}"},
            ) as response:
                body = await response.json(content_type=None)
                assert response.status == 200, body
            totals.accepted += body["accepted"]
            totals.duplicates += body["duplicates"]
            totals.rejected += len(body["rejected"])

        return send

    seconds = await run_bounded([job(u, e) for u, e in generated.batches], concurrency)
    return seconds, totals


async def ingest_at_the_service(
    address: str, issuer: TokenIssuer, generated: Generated, concurrency: int
) -> tuple[float, Totals]:
    totals = Totals()
    prepared = [
        (
            (("authorization", f"Bearer {issuer.issue(user, ['user'])}"),),
            json_format.ParseDict({"events": events}, analytics_pb2.IngestEventsRequest()),
        )
        for user, events in generated.batches
    ]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)

        def job(
            metadata: tuple[tuple[str, str], ...], request: analytics_pb2.IngestEventsRequest
        ) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                reply = await stub.IngestEvents(request, metadata=metadata, timeout=60)
                totals.accepted += reply.accepted
                totals.duplicates += reply.duplicates
                totals.rejected += len(reply.rejected)

            return send

        seconds = await run_bounded([job(m, r) for m, r in prepared], concurrency)
    return seconds, totals


def _buckets(body: dict[str, Any]) -> list[tuple[datetime, int]]:
    return [
        (datetime.fromisoformat(b["start"].replace("Z", "+00:00")), int(b["count"]))
        for b in body["buckets"]
    ]


async def check_queries(
    http: aiohttp.ClientSession, base: str, admin: str, rows: list[reference.Row]
) -> dict[str, float]:
    """Every answer through the gateway equals the reference; seconds per query."""
    headers = {"Authorization": f"Bearer {admin}"}
    timings: dict[str, float] = {}

    async def ask(name: str, route: str, params: dict[str, str]) -> dict[str, Any]:
        started = time.perf_counter()
        async with http.get(
            f"{base}/api/v1/analytics/{route}", params=params, headers=headers
        ) as r:
            body: dict[str, Any] = await r.json(content_type=None)
            assert r.status == 200, (name, body)
        timings[f"query_{name}_seconds"] = time.perf_counter() - started
        return body

    whole = {"from": _iso(START), "to": _iso(END)}
    six_hours = {"from": "2026-10-25T00:00:00Z", "to": "2026-10-25T06:00:00Z"}
    for name, type_, interval, tz, window in [
        ("counts_hour_berlin", "page.view", "hour", "Europe/Berlin", whole),
        ("counts_day_new_york", "cart.add", "day", "America/New_York", whole),
        ("counts_minute_utc", "product.view", "minute", "UTC", six_hours),
    ]:
        body = await ask(name, "counts", {"type": type_, "interval": interval, "tz": tz, **window})
        start, end = (
            datetime.fromisoformat(window[k].replace("Z", "+00:00")) for k in ("from", "to")
        )
        expected = reference.counts(rows, type_, start, end, interval, tz)
        assert _buckets(body) == expected, name
        assert int(body["total"]) == sum(n for _, n in expected), name
    for name, type_, interval, tz in [
        ("uniques_hour_berlin", "product.view", "hour", "Europe/Berlin"),
        ("uniques_day_utc", "page.view", "day", "UTC"),
    ]:
        body = await ask(name, "uniques", {"type": type_, "interval": interval, "tz": tz, **whole})
        assert _buckets(body) == reference.uniques(rows, type_, START, END, interval, tz), name
    for name, type_, prop, limit in [
        ("top_path", "page.view", "path", 10),
        ("top_sku", "cart.add", "sku", 25),
    ]:
        body = await ask(
            name, "top", {"type": type_, "property": prop, "limit": str(limit), **whole}
        )
        answer = [(v["value"], int(v["count"])) for v in body["values"]]
        assert answer == reference.top(rows, type_, START, END, prop, limit), name
    for name, within, span in [
        ("funnel_30m", "30m", timedelta(minutes=30)),
        ("funnel_1d", "1d", timedelta(days=1)),
    ]:
        body = await ask(name, "funnel", {"steps": ",".join(FUNNEL), "within": within, **whole})
        answer = [(s["type"], int(s["users"])) for s in body["steps"]]
        assert answer == reference.funnel(rows, FUNNEL, span, START, END), name
    return timings


async def scenario(
    mesh: MeshProcess, data_dir: Path, events: int, service_events: int, concurrency: int
) -> dict[str, float]:
    keys = load_or_create_keys(data_dir / "keys")
    issuer = TokenIssuer(keys, TokenSettings())
    pids: dict[str, int] = {}
    for name, marker, context, file in [
        ("analytics", "services.analytics", f"MESH_NAMESPACE={mesh.namespace}", "environ"),
        ("gateway", "-m gateway", f"MESH_NAMESPACE={mesh.namespace}", "environ"),
        ("mongodb-wire server", "secantusd", str(data_dir), "cmdline"),
    ]:
        pid = find_pid(marker, context, file)
        if pid is not None:
            pids[name] = pid
    probe = Probe(pids, f"http://127.0.0.1:{mesh.ops_ports['analytics']}/metrics")
    results: dict[str, float] = {}
    generated = generate(events)
    extra = generate(service_events, seed=11) if service_events else None
    results["events_sent"] = generated.sent
    results["deliberate_duplicates"] = generated.duplicates
    results["sent_out_of_order"] = generated.out_of_order
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        before = await probe.snapshot(http)
        seconds, totals = await ingest_through_gateway(
            http, mesh.gateway, issuer, generated, concurrency
        )
        after = await probe.snapshot(http)
        assert (totals.accepted, totals.duplicates, totals.rejected) == (
            generated.sent - generated.duplicates,
            generated.duplicates,
            0,
        ), totals
        results.update(report("gateway", generated.sent, seconds, before, after))
        admin = issuer.issue(str(uuid.uuid4()), ["user", "admin"])
        results.update(await check_queries(http, mesh.gateway, admin, generated.rows))
        results["queries_equal_python"] = 1
        if extra is not None:
            before = await probe.snapshot(http)
            seconds, totals = await ingest_at_the_service(
                f"127.0.0.1:{mesh.ports['analytics']}", issuer, extra, concurrency
            )
            after = await probe.snapshot(http)
            assert totals.accepted == extra.sent - extra.duplicates, totals
            results.update(report("service", extra.sent, seconds, before, after))
    return results


# --- in the report ------------------------------------------------------------------------


def _rate_sample(
    generated: Generated, seconds: float, totals: Totals, cpu: dict[str, float]
) -> dict[str, float]:
    expected = (generated.sent - generated.duplicates, generated.duplicates, 0)
    wrong = (totals.accepted, totals.duplicates, totals.rejected) != expected
    return {
        "events/s": generated.sent / seconds,
        "batches/s": generated.sent / BATCH / seconds,
        "errors": float(wrong),
        **{f"cpu {k}": v / generated.sent * 1000 for k, v in cpu.items()},
    }


async def _repetitions(
    mesh: SharedMesh, events: int, repetitions: int, concurrency: int, meter: CpuMeter
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    issuer = TokenIssuer(load_or_create_keys(mesh.data_dir / "keys"), TokenSettings())
    service = mesh.address("analytics")
    gateway_runs, service_runs = [], []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        warm = generate(max(BATCH * concurrency, events // 10), seed=1000)  # warm-up
        await ingest_through_gateway(http, mesh.gateway, issuer, warm, concurrency)
        await ingest_at_the_service(service, issuer, generate(len(warm.rows), 1001), concurrency)
        for repetition in range(repetitions):
            generated = generate(events, seed=2 * repetition)  # distinct ids every time
            meter.start()
            seconds, totals = await ingest_through_gateway(
                http, mesh.gateway, issuer, generated, concurrency
            )
            gateway_runs.append(_rate_sample(generated, seconds, totals, meter.stop()))
            generated = generate(events, seed=2 * repetition + 1)
            meter.start()
            seconds, totals = await ingest_at_the_service(service, issuer, generated, concurrency)
            service_runs.append(_rate_sample(generated, seconds, totals, meter.stop()))
    return gateway_runs, service_runs


def measure(context: Context) -> ScenarioResult:
    settings = context.settings
    mesh = context.mesh()
    split = CoreSplit.plan(1)
    mesh.pin(split, gateway_is_measured=True)
    pin_self(split.load)
    roles = mesh.roles()
    meter = CpuMeter(
        {
            "gateway": roles.get("gateway", []),
            "analytics": roles.get("analytics", []),
            "mongodb-wire": roles.get("mongodb-wire", []),
            "load (this process)": [os.getpid()],
        }
    )
    events = settings.pick(20_000, 1_000)
    concurrency = 8
    gateway_runs, service_runs = uvloop.run(
        _repetitions(mesh, events, settings.repetitions, concurrency, meter)
    )
    return ScenarioResult(
        4,
        "analytics_ingest",
        "Analytics ingest",
        setup=(
            f"{events:,} events per repetition (5% deliberate duplicates, out of order) in "
            f"batches of {BATCH}, {concurrency} batches in flight, each user's batches with "
            "that user's token: through the gateway (`POST /api/v1/analytics/events:batch`), "
            "and, as the baseline, the same kind of batches straight to the analytics "
            "service's gRPC `IngestEvents`. Every answer is checked (accepted + duplicates)."
        ),
        cores=split.describe("the gateway") + " (analytics and the MongoDB-wire server with them)",
        tables=[
            Table(
                "Events per second, batches of 100",
                [
                    Row.of("through the gateway", gateway_runs),
                    Row.of("at the service (gRPC, no gateway)", service_runs),
                ],
                cpu_unit="CPU s per 1,000 events",
            )
        ],
        headlines=[
            headline("events/s through the gateway", Figure.of(column(gateway_runs, "events/s"))),
            headline(
                "gateway ÷ service alone, events/s",
                paired(column(gateway_runs, "events/s"), column(service_runs, "events/s")),
                "x",
            ),
        ],
        errors=int(sum(r["errors"] for r in gateway_runs + service_runs)),
    )


SCENARIO = Scenario(4, "analytics_ingest", "Analytics ingest", measure, uses_mesh=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--service-events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as scratch:
        data_dir = Path(scratch)
        env, ports, ops_ports, namespace = mesh_env(
            {
                **store_overrides(),
                "MESH_LOG_LEVEL": "warning",
                "OTEL_TRACES_SAMPLER_ARG": "0",
                # Queries over 100,000 events on the MongoDB-wire server take seconds.
                "MESH_GATEWAY_UPSTREAM_TIMEOUT_SECONDS": "120",
                "MESH_ANALYTICS_QUERY_TIMEOUT_SECONDS": "120",
            },
            data_dir,
        )
        mesh = start_mesh(env, ports, ops_ports, namespace, data_dir / "mesh.log")
        try:
            mesh.wait_for("the mesh is ready", timeout=150)
            results = asyncio.run(
                scenario(mesh, data_dir, args.events, args.service_events, args.concurrency)
            )
        finally:
            mesh.stop()
    for name, value in results.items():
        print(f"{name}: {value:.2f}" if isinstance(value, float) else f"{name}: {value}")
    print(f"cores: {os.cpu_count()}")
    print(f"bench_seconds: {time.perf_counter() - started:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
