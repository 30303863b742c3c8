"""Scenario 1: the gateway's read path, side by side with its ceilings.

`GET /api/v1/products/{id}`, signed in, catalog cache hit, through every policy (auth, rate
limit with limits no client reaches, breaker, retries, CORS, tracing sampled at 10% and
exported over OTLP), at 64 connections with `wrk`, through an extra gateway of 1 and then
2 workers in front of the shared mesh's upstreams. Baselines, in the same repetitions:

* (a) a bare aiohttp handler returning the same JSON (`bench.baselines.bare_http`), same
  number of worker processes;
* (b) nginx ``proxy_pass`` (keep-alive) to a bare aiohttp upstream returning that JSON
  (`bench.baselines.nginx`), 1 worker each;
* (c) the catalog service called directly over gRPC by a Python client
  (`bench.harness.grpc_load`: 64 calls in flight, the same token).

Then the latency at half the gateway's saturation rate (its median requests/s of the
throughput runs, halved): a Python aiohttp client paced at that rate through the gateway
(`bench.harness.http_paced`: calls evenly spaced; `hey -q` fires all its connections at
once, so 64 connections arrive as bursts of 64), and the Python gRPC client paced the same
way at the same rate at the catalog; the latency the gateway adds is the
difference of their p50 and of their p99.

    python -m bench.gateway_read [--quick] [--seconds 5] [--repetitions 3]
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable

from bench.baselines.bare_http import bare_http
from bench.baselines.nginx import installed as nginx_installed
from bench.baselines.nginx import nginx_proxy
from bench.gateway_policies import EVERY_POLICY, catalog_side
from bench.harness.cores import CoreSplit, cpu_list
from bench.harness.grpc_load import get_product_load
from bench.harness.http_load import available, closed_loop
from bench.harness.http_paced import paced_http_load
from bench.harness.procfs import CpuMeter
from bench.harness.report import Row, ScenarioResult, Table, at_least, at_most, headline
from bench.harness.runner import Context, Scenario, main_one
from bench.harness.stats import Figure, column, load_sample, paired

GATEWAY_1 = "gateway, 1 worker"
GATEWAY_2 = "gateway, 2 workers"
BARE_1 = "(a) bare aiohttp, 1 worker"
BARE_2 = "(a) bare aiohttp, 2 workers"
NGINX = "(b) nginx → aiohttp, 1 worker"
GRPC = "(c) catalog over gRPC, Python client"
GATEWAY_HALF = "gateway (Python client, paced)"
GRPC_HALF = "(c) catalog over gRPC (Python client, paced)"


def measure(context: Context) -> ScenarioResult:
    settings = context.settings
    mesh = context.mesh()
    one, two = CoreSplit.plan(1), CoreSplit.plan(2)
    token = mesh.token()
    path = f"/api/v1/products/{mesh.product}"
    headers = EVERY_POLICY.headers(token)
    body = context.scratch / "product.json"
    body.write_bytes(mesh.product_body)
    catalog = mesh.address("catalog")
    generator = available() or "wrk"
    samples: dict[str, list[dict[str, float]]] = defaultdict(list)
    notes: dict[str, str] = {}

    def http(name: str, url: str, groups: dict[str, list[int]], split: CoreSplit) -> None:
        meter = CpuMeter(groups)
        meter.start()
        load = closed_loop(url, settings.seconds, settings.connections, headers, split.load)
        samples[name].append(load_sample(load, meter.stop(), generator))
        notes[name] = f"server {cpu_list(split.server)} / load {cpu_list(split.load)}"

    def grpc(name: str, rate: float | None, warmup: float, split: CoreSplit) -> None:
        meter = CpuMeter(catalog_side(mesh))
        meter.start()
        load = get_product_load(
            catalog,
            mesh.product,
            token,
            settings.seconds,
            connections=settings.connections,
            rate=rate,
            cpus=split.server,  # the gateway's core: free while no gateway is measured
            warmup=warmup,
        )
        samples[name].append(load_sample(load, meter.stop(), "grpc client"))
        notes[name] = f"catalog {cpu_list(split.upstream)} / client {cpu_list(split.server)}"

    def warm(url: str, split: CoreSplit) -> None:
        closed_loop(url, settings.warmup, settings.connections, headers, split.load)

    # 1 worker: the server on its own core, upstreams and load on the other.
    mesh.pin(one)
    with contextlib.ExitStack() as stack:
        gateway = stack.enter_context(mesh.extra_gateway(EVERY_POLICY.env, 1, one.server))
        bare = stack.enter_context(bare_http(body, 1, one.server))
        servers: list[tuple[str, str, Callable[[], dict[str, list[int]]]]] = [
            (GATEWAY_1, gateway.url, lambda: {"gateway": gateway.pids, **catalog_side(mesh)}),
            (BARE_1, bare.url, lambda: {"bare aiohttp": bare.pids}),
        ]
        if nginx_installed():
            upstream = stack.enter_context(bare_http(body, 1, one.upstream))
            proxy = stack.enter_context(
                nginx_proxy(upstream.port, 1, one.server, context.scratch / "nginx")
            )
            servers.append(
                (NGINX, proxy.url, lambda: {"nginx": proxy.pids, "aiohttp upstream": upstream.pids})
            )
        for _, url, _ in servers:
            warm(url + path, one)
        for repetition in range(settings.repetitions):
            for name, url, groups in servers:
                http(name, url + path, groups(), one)
            grpc(GRPC, None, settings.warmup if repetition == 0 else 0.5, one)
        half = Figure.of(column(samples[GATEWAY_1], "req/s")).median / 2
        for _ in range(settings.repetitions):
            meter = CpuMeter({"gateway": gateway.pids, **catalog_side(mesh)})
            meter.start()
            load = paced_http_load(
                gateway.url + path,
                settings.seconds,
                half,
                connections=settings.connections,
                headers=headers,
                cpus=one.load,
                warmup=0.5,
            )
            samples[GATEWAY_HALF].append(load_sample(load, meter.stop(), "http client"))
            notes[GATEWAY_HALF] = notes[GATEWAY_1]
            grpc(GRPC_HALF, half, 0.5, one)

    # 2 workers: they take both cores; upstreams and load share them.
    mesh.pin(two)
    with contextlib.ExitStack() as stack:
        gateway2 = stack.enter_context(mesh.extra_gateway(EVERY_POLICY.env, 2, two.server))
        bare2 = stack.enter_context(bare_http(body, 2, two.server))
        warm(gateway2.url + path, two)
        warm(bare2.url + path, two)
        for _ in range(settings.repetitions):
            http(
                GATEWAY_2,
                gateway2.url + path,
                {"gateway": gateway2.pids, **catalog_side(mesh)},
                two,
            )
            http(BARE_2, bare2.url + path, {"bare aiohttp": bare2.pids}, two)
    mesh.pin(one)

    def rps(name: str) -> list[float]:
        return column(samples[name], "req/s")

    def latency(name: str, which: str) -> list[float]:
        return column(samples[name], which)

    throughput = [GATEWAY_1, BARE_1, NGINX, GRPC, GATEWAY_2, BARE_2]
    result = ScenarioResult(
        1,
        "gateway_read",
        "Gateway read path",
        setup=(
            f"`GET /api/v1/products/{{id}}` signed in, cache hit, every policy on (auth, rate "
            f"limit, breaker, retries, CORS, tracing 10% exported), {generator} with "
            f"{settings.connections} connections; baselines (a) bare aiohttp, (b) nginx → "
            "aiohttp, (c) catalog `GetProduct` over gRPC from a Python client. Latency added: "
            "gateway and (c) both paced (evenly spaced, Python clients) at half the "
            f"gateway's saturation rate "
            f"({half:,.0f} req/s)."
        ),
        cores=(
            f"1 worker: {one.describe('the gateway / bare aiohttp / nginx')}; (b)'s aiohttp "
            f"upstream with the upstreams; (c)'s client on CPU {cpu_list(one.server)} (free "
            f"then). 2 workers: {two.describe('the workers')}"
        ),
        tables=[
            Table(
                f"Throughput, {settings.connections} connections (closed loop)",
                [Row.of(n, samples[n], notes.get(n, "")) for n in throughput if samples[n]],
            ),
            Table(
                f"Latency at half the gateway's saturation rate ({half:,.0f} req/s)",
                [Row.of(n, samples[n], notes.get(n, "")) for n in (GATEWAY_HALF, GRPC_HALF)],
            ),
        ],
        headlines=[
            headline(
                "gateway ÷ bare aiohttp, 1 worker",
                paired(rps(GATEWAY_1), rps(BARE_1)),
                "x",
                "≥ 0.35",
                at_least(0.35),
            ),
            headline(
                "gateway ÷ bare aiohttp, 2 workers",
                paired(rps(GATEWAY_2), rps(BARE_2)),
                "x",
                "≥ 0.35",
                at_least(0.35),
            ),
            headline(
                "latency the gateway adds over direct gRPC, p50",
                paired(
                    latency(GATEWAY_HALF, "p50 ms"), latency(GRPC_HALF, "p50 ms"), difference=True
                ),
                " ms",
                "≤ 1 ms",
                at_most(1.0),
            ),
            headline(
                "latency the gateway adds over direct gRPC, p99",
                paired(
                    latency(GATEWAY_HALF, "p99 ms"), latency(GRPC_HALF, "p99 ms"), difference=True
                ),
                " ms",
                "≤ 5 ms",
                at_most(5.0),
            ),
            headline(
                "gateway 2 workers ÷ 1 worker",
                paired(rps(GATEWAY_2), rps(GATEWAY_1)),
                "x",
                "≥ 1.7",
                at_least(1.7),
            ),
            headline(
                "bare aiohttp 2 workers ÷ 1 worker (this machine's ceiling)",
                paired(rps(BARE_2), rps(BARE_1)),
                "x",
            ),
        ],
        errors=int(sum(s["errors"] for runs in samples.values() for s in runs)),
    )
    for name in (GATEWAY_1, GATEWAY_2):
        result.notes.append(f"{name}: cores busy per process, {_busy(samples[name])}")
    if samples[NGINX]:
        result.headlines.insert(
            2,
            headline(
                "gateway ÷ nginx → aiohttp, 1 worker", paired(rps(GATEWAY_1), rps(NGINX)), "x"
            ),
        )
    else:
        result.notes.append("nginx is not installed: baseline (b) skipped (apt-get install nginx)")
    result.notes.append(
        f"tracing: {mesh.spans_exported():,} spans reached the OTLP sink so far (10% sampled)"
    )
    result.notes.append(
        "(c)'s requests/s is bounded by its Python client (its CPU is in the table); it is the "
        "latency baseline, not a throughput ceiling"
    )
    return result


def _busy(runs: list[dict[str, float]]) -> str:
    """Each process group's median CPU use in cores (CPU s per request x requests/s): which
    one bounds the throughput."""
    groups = [k for k in runs[0] if k.startswith("cpu ")] if runs else []
    busy = {
        k.removeprefix("cpu "): Figure.of(r[k] * r["req/s"] / 1000 for r in runs).median
        for k in groups
    }
    return ", ".join(f"{name} {cores:.2f}" for name, cores in busy.items())


SCENARIO = Scenario(1, "gateway_read", "Gateway read path", measure, uses_mesh=True)


if __name__ == "__main__":
    raise SystemExit(main_one(SCENARIO))
