"""Scenario: the cost of authentication.

1. Access-token verification, in-process: median microseconds per `TokenVerifier.verify`
   with the verified-token cache off (a full EdDSA check every time) and on (a repeated
   token), the two ways the gateway meets a token.
2. Through a real mesh (`mesh up` on free loopback ports): logins per second with 50
   concurrent logins, and the p50/p99 of `GET /api/v1/users/me` (a signed-in read) alone and
   while those logins run. The issue's bar: p99 under 50 ms alongside the logins.

In `python -m bench` (scenario 6, `measure`) the same loops run on the shared mesh, with
repetitions: in each, the reads alone, then the reads during the login loops; the headline
is the ratio of their p99s, and the CPU of the users service and the gateway per login.

    python -m bench.auth [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from bench.harness.cores import CoreSplit, pin_self
from bench.harness.mesh import PASSWORD, store_overrides
from bench.harness.procfs import CpuMeter
from bench.harness.report import Row, ScenarioResult, Table, at_most, headline
from bench.harness.runner import Context, Scenario
from bench.harness.stats import Figure, column, paired, percentile
from mesh.auth.keys import key_id, public_jwk
from mesh.auth.tokens import TokenIssuer, TokenSettings, TokenVerifier
from tests.e2e.mesh_process import MeshProcess, mesh_env, start_mesh


async def verification_cost(rounds: int = 3000) -> dict[str, float]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mesh.auth.keys import SigningKey

    private = Ed25519PrivateKey.generate()
    key = SigningKey(key_id(private.public_key()), private)

    async def jwks() -> list[dict[str, Any]]:
        return [public_jwk(key)]

    issuer = TokenIssuer([key], TokenSettings())
    results = {}
    for name, cache_size in (("uncached", 0), ("cached", 10_000)):
        verifier = TokenVerifier(jwks, TokenSettings(), cache_size=cache_size)
        token = issuer.issue("bench-user", ["user"])
        await verifier.verify(token)  # warm: keys fetched
        samples = []
        for _ in range(rounds):
            started = time.perf_counter_ns()
            await verifier.verify(token)
            samples.append((time.perf_counter_ns() - started) / 1000)
        results[f"verify_{name}_us_median"] = statistics.median(samples)
    return results


async def request_json(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as response:
        return response.status, await response.json(content_type=None)


async def me_latencies(
    http: aiohttp.ClientSession, base: str, token: str, stop: asyncio.Event
) -> tuple[list[float], int]:
    """Sequential signed-in reads, about 50 per second, until `stop`; their latencies (ms)
    and how many were not 200."""
    samples, errors = [], 0
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        started = time.perf_counter()
        status, _ = await request_json(http, "GET", f"{base}/api/v1/users/me", headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        errors += status != 200
        await asyncio.sleep(0.02)
    return samples, errors


async def register(http: aiohttp.ClientSession, base: str, count: int) -> list[str]:
    """`count` new accounts; their emails (the password is PASSWORD)."""
    emails = [f"bench-{uuid.uuid4().hex[:8]}-{i}@example.org" for i in range(count)]
    for email in emails:
        status, body = await request_json(
            http,
            "POST",
            f"{base}/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "displayName": "Bench"},
        )
        assert status == 200, body
    return emails


async def login(http: aiohttp.ClientSession, base: str, email: str) -> tuple[int, Any]:
    return await request_json(
        http, "POST", f"{base}/api/v1/auth/login", json={"email": email, "password": PASSWORD}
    )


async def reads_alone(
    http: aiohttp.ClientSession, base: str, token: str, seconds: float
) -> tuple[list[float], int]:
    stop = asyncio.Event()
    reader = asyncio.create_task(me_latencies(http, base, token, stop))
    await asyncio.sleep(seconds)
    stop.set()
    return await reader


@dataclass
class DuringLogins:
    logins_per_second: float
    login_errors: int
    latencies: list[float]  # of the reads meanwhile, ms
    read_errors: int


async def reads_during_logins(
    http: aiohttp.ClientSession, base: str, token: str, emails: list[str], seconds: float
) -> DuringLogins:
    """One login loop per email (as many concurrent logins) for `seconds`, and the reads."""
    logins = errors = 0
    stop = asyncio.Event()

    async def login_loop(email: str) -> None:
        nonlocal logins, errors
        while not stop.is_set():
            status, _ = await login(http, base, email)
            logins += status == 200
            errors += status != 200

    reads_stop = asyncio.Event()
    reader = asyncio.create_task(me_latencies(http, base, token, reads_stop))
    loopers = [asyncio.create_task(login_loop(e)) for e in emails]
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    stop.set()
    reads_stop.set()
    elapsed = time.perf_counter() - started
    await asyncio.gather(*loopers)
    during, read_errors = await reader
    return DuringLogins(logins / elapsed, errors, during, read_errors)


async def through_the_mesh(mesh: MeshProcess, seconds: float) -> dict[str, float]:
    base = mesh.gateway
    async with aiohttp.ClientSession() as http:
        emails = await register(http, base, 50)
        status, tokens = await login(http, base, emails[0])
        assert status == 200, tokens
        token = tokens["accessToken"]
        alone, _ = await reads_alone(http, base, token, seconds / 2)
        during = await reads_during_logins(http, base, token, emails, seconds)
    return {
        "logins_per_second": during.logins_per_second,
        "me_p50_ms_alone": percentile(alone, 0.5),
        "me_p99_ms_alone": percentile(alone, 0.99),
        "me_p50_ms_with_50_logins": percentile(during.latencies, 0.5),
        "me_p99_ms_with_50_logins": percentile(during.latencies, 0.99),
        "me_samples_with_logins": len(during.latencies),
    }


# --- in the report ------------------------------------------------------------------------


async def _repetitions(
    base: str, count: int, seconds: float, repetitions: int, meter: CpuMeter
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    alone_runs, during_runs = [], []
    async with aiohttp.ClientSession() as http:
        emails = await register(http, base, count)
        status, tokens = await login(http, base, emails[0])
        assert status == 200, tokens
        token = tokens["accessToken"]
        await reads_alone(http, base, token, 0.5)  # warm-up: connections, token cache
        for _ in range(repetitions):
            alone, errors = await reads_alone(http, base, token, seconds)
            alone_runs.append(
                {
                    "p50 ms": percentile(alone, 0.5),
                    "p99 ms": percentile(alone, 0.99),
                    "errors": float(errors),
                }
            )
            meter.start()
            during = await reads_during_logins(http, base, token, emails, seconds)
            cpu = meter.stop()
            logins = max(1.0, during.logins_per_second * seconds)
            during_runs.append(
                {
                    "logins/s": during.logins_per_second,
                    "p50 ms": percentile(during.latencies, 0.5),
                    "p99 ms": percentile(during.latencies, 0.99),
                    "errors": float(during.login_errors + during.read_errors),
                    **{f"cpu {k}": v / logins * 1000 for k, v in cpu.items()},
                }
            )
    return alone_runs, during_runs


def measure(context: Context) -> ScenarioResult:
    settings = context.settings
    mesh = context.mesh()
    split = CoreSplit.plan(1)
    mesh.pin(split, gateway_is_measured=True)
    pin_self(split.load)
    roles = mesh.roles()
    meter = CpuMeter({"users": roles.get("users", []), "gateway": roles.get("gateway", [])})
    concurrent = settings.pick(50, 4)
    alone, during = uvloop.run(
        _repetitions(mesh.gateway, concurrent, settings.seconds, settings.repetitions, meter)
    )
    verification = asyncio.run(verification_cost(settings.pick(3000, 300)))
    p99_alone = column(alone, "p99 ms")
    p99_during = column(during, "p99 ms")
    return ScenarioResult(
        6,
        "auth",
        "Login",
        setup=(
            f"{concurrent} concurrent login loops through the gateway (argon2id in the users "
            "service), and meanwhile sequential signed-in reads `GET /api/v1/users/me` "
            f"(~50/s); the same reads alone just before, in each repetition "
            f"({settings.seconds:g} s each)."
        ),
        cores=split.describe("the gateway") + "; the users service with the upstreams",
        tables=[
            Table(
                "Logins, and unrelated reads meanwhile",
                [
                    Row.of("reads alone", alone),
                    Row.of(f"reads during {concurrent} login loops", during),
                ],
                cpu_unit="CPU s per 1,000 logins",
            ),
            Table(
                "Access-token verification in-process (µs, median)",
                [
                    Row(
                        "TokenVerifier.verify",
                        {
                            "uncached (full EdDSA check)": Figure.of(
                                [verification["verify_uncached_us_median"]]
                            ),
                            "cached (a repeated token)": Figure.of(
                                [verification["verify_cached_us_median"]]
                            ),
                        },
                    )
                ],
            ),
        ],
        headlines=[
            headline("logins/s", Figure.of(column(during, "logins/s"))),
            headline("reads p99 during logins ÷ alone", paired(p99_during, p99_alone), "x"),
            headline(
                "reads p99 during logins (the auth issue's bar)",
                Figure.of(p99_during),
                " ms",
                "≤ 50 ms",
                at_most(50.0),
            ),
        ],
        errors=int(sum(r["errors"] for r in alone + during)),
    )


SCENARIO = Scenario(6, "auth", "Login", measure, uses_mesh=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    results = asyncio.run(verification_cost())
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as scratch:
        data_dir = Path(scratch)
        env, ports, ops_ports, namespace = mesh_env(
            {
                **store_overrides(),
                "MESH_LOG_LEVEL": "warning",
                "MESH_USERS_LOGIN_MAX_ATTEMPTS_PER_ADDRESS": "1000000",
            },
            data_dir,
        )
        mesh = start_mesh(env, ports, ops_ports, namespace, data_dir / "mesh.log")
        try:
            mesh.wait_for("the mesh is ready", timeout=150)
            results.update(asyncio.run(through_the_mesh(mesh, args.seconds)))
        finally:
            mesh.stop()
    for name, value in results.items():
        print(f"{name}: {value:.1f}")
    print(f"cores: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
