"""Scenario: the cost of authentication.

1. Access-token verification, in-process: median microseconds per `TokenVerifier.verify`
   with the verified-token cache off (a full EdDSA check every time) and on (a repeated
   token), the two ways the gateway meets a token.
2. Through a real mesh (`mesh up` on free loopback ports): logins per second with 50
   concurrent logins, and the p50/p99 of `GET /api/v1/users/me` (a signed-in read) alone and
   while those logins run. The issue's bar: p99 under 50 ms alongside the logins.

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
from pathlib import Path
from typing import Any

import aiohttp

from mesh.auth.keys import key_id, public_jwk
from mesh.auth.tokens import TokenIssuer, TokenSettings, TokenVerifier
from tests.e2e.mesh_process import MeshProcess, mesh_env, start_mesh

PASSWORD = "a long enough secret"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


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
) -> list[float]:
    """Sequential signed-in reads, about 50 per second, until `stop`."""
    samples = []
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        started = time.perf_counter()
        status, _ = await request_json(http, "GET", f"{base}/api/v1/users/me", headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        assert status == 200, status
        await asyncio.sleep(0.02)
    return samples


async def through_the_mesh(mesh: MeshProcess, seconds: float) -> dict[str, float]:
    base = mesh.gateway
    async with aiohttp.ClientSession() as http:
        emails = [f"bench-{uuid.uuid4().hex[:8]}-{i}@example.org" for i in range(50)]
        for email in emails:
            status, body = await request_json(
                http,
                "POST",
                f"{base}/api/v1/auth/register",
                json={"email": email, "password": PASSWORD, "displayName": "Bench"},
            )
            assert status == 200, body
        status, tokens = await request_json(
            http,
            "POST",
            f"{base}/api/v1/auth/login",
            json={"email": emails[0], "password": PASSWORD},
        )
        assert status == 200, tokens
        token = tokens["accessToken"]

        stop = asyncio.Event()
        reader = asyncio.create_task(me_latencies(http, base, token, stop))
        await asyncio.sleep(seconds / 2)
        stop.set()
        alone = await reader

        logins = 0
        login_stop = asyncio.Event()

        async def login_loop(email: str) -> None:
            nonlocal logins
            while not login_stop.is_set():
                status, body = await request_json(
                    http,
                    "POST",
                    f"{base}/api/v1/auth/login",
                    json={"email": email, "password": PASSWORD},
                )
                assert status == 200, body
                logins += 1

        stop = asyncio.Event()
        reader = asyncio.create_task(me_latencies(http, base, token, stop))
        loopers = [asyncio.create_task(login_loop(e)) for e in emails]
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        login_stop.set()
        stop.set()
        elapsed = time.perf_counter() - started
        await asyncio.gather(*loopers)
        during = await reader
    return {
        "logins_per_second": logins / elapsed,
        "me_p50_ms_alone": percentile(alone, 0.5),
        "me_p99_ms_alone": percentile(alone, 0.99),
        "me_p50_ms_with_50_logins": percentile(during, 0.5),
        "me_p99_ms_with_50_logins": percentile(during, 0.99),
        "me_samples_with_logins": len(during),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    results = asyncio.run(verification_cost())
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as scratch:
        data_dir = Path(scratch)
        base = {
            k: os.environ[k]
            for k in ("MESH_POSTGRES_DSN", "MESH_REDIS_URL", "MESH_MONGO_URL")
            if os.environ.get(k)
        }
        env, ports, ops_ports, namespace = mesh_env(
            {
                **base,
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
