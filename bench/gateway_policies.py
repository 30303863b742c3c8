"""Scenario 2: what each gateway traffic policy costs, each one alone on.

On the shared mesh (catalog cache on, 50 seeded products), one extra single-worker gateway
per configuration runs in front of the same upstreams and Redis, and one product is read
through each with `wrk -c64` (`GET /api/v1/products/{id}`, the read path of scenario 1):

* `none`: rate limits, breakers and retries off, tracing off (``OTEL_SDK_DISABLED``), no
  token, no ``Origin`` (the deadline is always set);
* each policy alone on: `auth` (the request carries a bearer token: verified, cached, and
  forwarded), `rate limit` (one Redis GCRA decision per request, limits no client reaches),
  `breaker`, `retries` (the retry budget's bookkeeping), `cors` (an allowed ``Origin``),
  `tracing 10%` and `tracing 100%` (sampled at that ratio, exported over OTLP/gRPC to a
  local sink);
* `all`: everything on (scenario 1's configuration).

Per configuration: requests/s, p50/p99 and the gateway process's CPU per request (µs, from
/proc), and each policy's cost as CPU per request above `none`. The gateways all run for
the whole scenario, pinned to the server core; each repetition measures every configuration
in turn, so a noisy moment hits them all alike.

    python -m bench.gateway_policies [--quick] [--seconds 5] [--repetitions 3]
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from bench.harness.cores import CoreSplit
from bench.harness.http_load import available, closed_loop
from bench.harness.mesh import ORIGIN, SharedMesh
from bench.harness.procfs import CpuMeter
from bench.harness.report import Row, ScenarioResult, Table, headline
from bench.harness.runner import Context, Scenario, main_one
from bench.harness.stats import Figure, column, load_sample, paired

OFF = {
    "MESH_GATEWAY_RATE_LIMITS": "false",
    "MESH_GATEWAY_BREAKERS": "false",
    "MESH_GATEWAY_RETRIES": "false",
}
NO_TRACING = {"OTEL_SDK_DISABLED": "true"}


@dataclass(frozen=True)
class Policies:
    """One configuration of the gateway: its settings and what each request carries."""

    env: dict[str, str] = field(default_factory=dict)
    token: bool = False
    origin: bool = False

    def headers(self, token: str) -> list[str]:
        headers = [f"Authorization: Bearer {token}"] if self.token else []
        return headers + ([f"Origin: {ORIGIN}"] if self.origin else [])


CONFIGURATIONS: dict[str, Policies] = {
    "none": Policies({**OFF, **NO_TRACING}),
    "auth": Policies({**OFF, **NO_TRACING}, token=True),
    "rate limit": Policies({**OFF, **NO_TRACING, "MESH_GATEWAY_RATE_LIMITS": "true"}),
    "breaker": Policies({**OFF, **NO_TRACING, "MESH_GATEWAY_BREAKERS": "true"}),
    "retries": Policies({**OFF, **NO_TRACING, "MESH_GATEWAY_RETRIES": "true"}),
    "cors": Policies({**OFF, **NO_TRACING}, origin=True),
    "tracing 10%": Policies(dict(OFF)),  # the mesh's own: 10%, exported to the sink
    "tracing 100%": Policies({**OFF, "OTEL_TRACES_SAMPLER_ARG": "1.0"}),
    "all": Policies({}, token=True, origin=True),
}
EVERY_POLICY = CONFIGURATIONS["all"]


def catalog_side(mesh: SharedMesh) -> dict[str, list[int]]:
    """The processes behind the gateway on the read path."""
    roles = mesh.roles()
    return {"catalog": roles.get("catalog", []), "redis": roles.get("redis", [])}


def measure(context: Context) -> ScenarioResult:
    settings = context.settings
    mesh = context.mesh()
    split = CoreSplit.plan(1)
    mesh.pin(split)
    token = mesh.token()
    path = f"/api/v1/products/{mesh.product}"
    generator = available() or "wrk"
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGURATIONS}
    with contextlib.ExitStack() as stack:
        gateways = {
            name: stack.enter_context(mesh.extra_gateway(policies.env, 1, split.server))
            for name, policies in CONFIGURATIONS.items()
        }
        for name, gateway in gateways.items():  # warm-up: channels, JWKS, script cache
            headers = CONFIGURATIONS[name].headers(token)
            closed_loop(
                gateway.url + path, settings.warmup, settings.connections, headers, split.load
            )
        for _ in range(settings.repetitions):
            for name, gateway in gateways.items():
                meter = CpuMeter({"gateway": gateway.pids, **catalog_side(mesh)})
                meter.start()
                load = closed_loop(
                    gateway.url + path,
                    settings.seconds,
                    settings.connections,
                    CONFIGURATIONS[name].headers(token),
                    split.load,
                )
                sample = load_sample(load, meter.stop(), generator)
                sample["gateway CPU µs/req"] = sample["cpu gateway"] * 1000
                samples[name].append(sample)
    none = samples["none"]
    rows = []
    for name, runs in samples.items():
        for run, base in zip(runs, none, strict=True):
            run["Δ µs/req vs none"] = run["gateway CPU µs/req"] - base["gateway CPU µs/req"]
            run["req/s ÷ none"] = run["req/s"] / base["req/s"] if base["req/s"] else 0.0
        rows.append(Row.of(name, runs))
    result = ScenarioResult(
        2,
        "gateway_policies",
        "Gateway overhead breakdown",
        setup=(
            f"`GET /api/v1/products/{{id}}` (cache hit) through one single-worker gateway per "
            f"configuration, {generator} with {settings.connections} connections; each policy "
            "alone on, against none and all."
        ),
        cores=split.describe("each gateway"),
        tables=[Table("Each policy alone (1 worker)", rows)],
        headlines=[
            headline(
                "req/s, every policy on ÷ none",
                paired(column(samples["all"], "req/s"), column(none, "req/s")),
                "x",
            ),
            headline(
                "gateway CPU per request, every policy on minus none",
                paired(
                    column(samples["all"], "gateway CPU µs/req"),
                    column(none, "gateway CPU µs/req"),
                    difference=True,
                ),
                " µs",
            ),
        ],
        errors=int(sum(s["errors"] for runs in samples.values() for s in runs)),
    )
    costly = max(
        (n for n in samples if n not in ("none", "all")),
        key=lambda n: Figure.of(column(samples[n], "Δ µs/req vs none")).median,
    )
    result.notes.append(f"the costliest policy alone: {costly}")
    return result


SCENARIO = Scenario(2, "gateway_policies", "Gateway overhead breakdown", measure, uses_mesh=True)


if __name__ == "__main__":
    raise SystemExit(main_one(SCENARIO))
