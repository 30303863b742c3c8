"""`GET /health`: the gateway's view of its upstreams, probed concurrently on each request.

gRPC upstreams answer grpc.health.v1 ``Check(service="")``; chat answers
``GET <url>/health/ready`` on each replica. 200 when every upstream serves, 503 (status
"degraded") otherwise. This is a diagnostic endpoint for people and dashboards; the
orchestrator's probes are the ops port's /health/* (they must not fail when an upstream
does, or every gateway would be restarted with it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Final

import aiohttp
import grpc
import grpc.aio
import orjson
from aiohttp import web
from grpc_health.v1 import health_pb2

from gateway.keys import UPSTREAMS_KEY
from gateway.upstreams import CHAT
from mesh.grpc_client import ChannelPool

PROBE_TIMEOUT_SECONDS: Final = 1.0
SERVING: Final = "SERVING"
NOT_SERVING: Final = "NOT_SERVING"
_CHECK: Final = "/grpc.health.v1.Health/Check"

Report = dict[str, object]


async def _timed(probe: Awaitable[Report], targets: Sequence[str]) -> Report:
    started = time.perf_counter()
    report = await probe
    report["latencyMs"] = round((time.perf_counter() - started) * 1000, 3)
    report["targets"] = list(targets)
    return report


async def probe_grpc(pool: ChannelPool) -> Report:
    check = pool.unary_unary(
        _CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    try:
        response = await check(
            health_pb2.HealthCheckRequest(service=""), timeout=PROBE_TIMEOUT_SECONDS
        )
    except grpc.aio.AioRpcError as error:
        return {"status": NOT_SERVING, "error": error.code().name}
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return {"status": status}


async def _probe_url(session: aiohttp.ClientSession, url: str) -> str | None:
    """None when `url`/health/ready answers 2xx, else what went wrong."""
    try:
        async with session.get(
            f"{url}/health/ready", timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS)
        ) as response:
            return None if response.status < 300 else f"HTTP {response.status}"
    except TimeoutError:
        return "timeout"
    except aiohttp.ClientError as error:
        return type(error).__name__


async def probe_http(session: aiohttp.ClientSession, urls: Sequence[str]) -> Report:
    failures = await asyncio.gather(*(_probe_url(session, url) for url in urls))
    errors = {url: f for url, f in zip(urls, failures, strict=True) if f is not None}
    if not errors:
        return {"status": SERVING}
    return {"status": NOT_SERVING, "error": "; ".join(f"{u}: {f}" for u, f in errors.items())}


async def health(request: web.Request) -> web.Response:
    upstreams = request.app[UPSTREAMS_KEY]
    probes = {
        name: _timed(probe_grpc(pool), pool.addresses) for name, pool in upstreams.grpc.items()
    }
    probes[CHAT] = _timed(probe_http(upstreams.http, upstreams.chat_urls), upstreams.chat_urls)
    reports = dict(zip(probes, await asyncio.gather(*probes.values()), strict=True))
    healthy = all(r["status"] == SERVING for r in reports.values())
    return web.Response(
        status=200 if healthy else 503,
        body=orjson.dumps({"status": "ok" if healthy else "degraded", "upstreams": reports}),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
