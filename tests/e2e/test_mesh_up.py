"""The whole mesh from `mesh up`: through the gateway to every service and back, a crash
that is healed, and a clean stop of every child."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import aiohttp
import asyncpg

from mesh.harness import BackingUrls
from tests.e2e.mesh_process import MeshProcess, pid_alive

PROBLEM = "application/problem+json"
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


async def test_users_register_through_the_gateway(
    mesh: MeshProcess, http: aiohttp.ClientSession
) -> None:
    body = {
        "email": "  E2E@Example.org",
        "password": "a long enough secret",
        "displayName": "End To End",
    }
    async with http.post(
        f"{mesh.gateway}/api/v1/auth/register",
        json=body,
        headers={"X-Request-ID": "e2e-register-1"},
    ) as response:
        assert response.status == 200, await response.text()
        assert response.headers["X-Request-ID"] == "e2e-register-1"
        user = await response.json()
    assert user["email"] == "e2e@example.org"
    assert user["displayName"] == "End To End"
    assert user["roles"] == ["user"]
    assert set(user) == {"id", "email", "displayName", "roles", "createdAt"}
    async with http.post(f"{mesh.gateway}/api/v1/auth/register", json=body) as response:
        assert response.status == 409
        assert response.content_type == PROBLEM
        problem = await response.json()
    assert problem["status"] == 409
    assert problem["requestId"]
    async with http.post(
        f"{mesh.gateway}/api/v1/auth/register",
        json={**body, "email": "x@example.org", "password": "short"},
    ) as response:
        assert response.status == 400
        problem = await response.json()
    assert [e["field"] for e in problem["errors"]] == ["password"]


async def test_catalog_reads_its_database_through_the_gateway(
    mesh: MeshProcess, backing: BackingUrls, http: aiohttp.ClientSession
) -> None:
    from mesh.settings import with_database

    product_id = uuid.uuid4()
    connection = await asyncpg.connect(
        with_database(backing.postgres_dsn, f"{mesh.namespace}catalog")
    )
    try:
        await connection.execute(
            "INSERT INTO products (id, sku, name, price_cents, currency, category, stock)"
            " VALUES ($1, 'E2E-1', 'Kettle', 3999, 'EUR', 'kitchen', 3)",
            product_id,
        )
    finally:
        await connection.close()
    async with http.get(f"{mesh.gateway}/api/v1/products/{product_id}") as response:
        assert response.status == 200, await response.text()
        product = await response.json()
    assert (product["id"], product["name"], product["priceCents"], product["stock"]) == (
        str(product_id),
        "Kettle",
        3999,
        3,
    )
    async with http.get(f"{mesh.gateway}/api/v1/products/{uuid.uuid4()}") as response:
        assert response.status == 404
        assert response.content_type == PROBLEM


async def access_token(mesh: MeshProcess, http: aiohttp.ClientSession) -> str:
    """A new account's access token (the chat WebSocket needs a signed-in user)."""
    credentials = {"email": f"ws{uuid.uuid4().hex[:10]}@example.org", "password": "x" * 16}
    async with http.post(
        f"{mesh.gateway}/api/v1/auth/register", json={**credentials, "displayName": "WS"}
    ) as response:
        assert response.status == 200, await response.text()
    async with http.post(f"{mesh.gateway}/api/v1/auth/login", json=credentials) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["accessToken"])


async def test_chat_websocket_through_the_gateway(
    mesh: MeshProcess, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{mesh.gateway}/ws/chat", headers=UPGRADE) as response:
        assert response.status == 401  # no token: refused before the upgrade
    token = await access_token(mesh, http)
    headers = {"Authorization": f"Bearer {token}"}
    async with http.ws_connect(f"{mesh.gateway}/ws/chat", headers=headers) as ws:
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=5) == {"type": "pong"}
        await ws.send_str("{not json")
        error = await ws.receive_json(timeout=5)
        assert (error["type"], error["code"]) == ("error", "invalid_json")


async def test_health_openapi_and_unknown_routes(
    mesh: MeshProcess, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{mesh.gateway}/health") as response:
        health = await response.json()
        assert response.status == 200, health
    assert set(health["upstreams"]) == {"users", "catalog", "analytics", "chat"}
    async with http.get(f"{mesh.gateway}/openapi.json") as response:
        document = await response.json()
    assert document["openapi"].startswith("3.1")
    assert {
        "/api/v1/auth/register",
        "/api/v1/products/{id}",
        "/api/v1/analytics/events:batch",
    } <= set(document["paths"])
    async with http.get(f"{mesh.gateway}/no/such/route") as response:
        assert response.status == 404
        assert response.content_type == PROBLEM
    for name, port in mesh.ops_ports.items():
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200, name
            assert "mesh_process_ready 1.0" in await response.text()


async def test_a_crashed_service_is_restarted_while_the_others_serve(
    mesh: MeshProcess, http: aiohttp.ClientSession
) -> None:
    token = await access_token(mesh, http)
    catalog_pid = mesh.child_pids()["catalog"][-1]
    os.kill(catalog_pid, signal.SIGKILL)
    url = f"{mesh.gateway}/api/v1/products/{uuid.uuid4()}"
    # Meanwhile the other routes keep answering.
    headers = {"Authorization": f"Bearer {token}"}
    async with http.ws_connect(f"{mesh.gateway}/ws/chat", headers=headers) as ws:
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=5) == {"type": "pong"}
    deadline = time.monotonic() + 30
    while True:
        async with http.get(url) as response:
            if response.status == 404:  # the restarted catalog answers from its database
                break
        assert time.monotonic() < deadline, "catalog was not restarted"
        await asyncio.sleep(0.2)
    assert len(mesh.child_pids()["catalog"]) == 2
    assert "catalog exited with code -9; restarting in 0.5 s" in mesh.output()


def test_sigint_stops_every_child_cleanly(mesh: MeshProcess) -> None:
    pids = [pid for group in mesh.child_pids().values() for pid in group]
    assert len(pids) >= 5
    code, elapsed = mesh.stop(signal.SIGINT)
    assert code == 0, mesh.output()[-3000:]
    assert elapsed < 10
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert "Traceback" not in mesh.output()
