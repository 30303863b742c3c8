"""The catalog end to end through the gateway after `mesh seed` (issue 4's contract)."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from tests.e2e.client import call, mesh_cli, new_account
from tests.e2e.mesh_process import MeshProcess


async def signed_in(mesh: MeshProcess, http: aiohttp.ClientSession, admin: bool = False) -> str:
    return (await new_account(mesh, http, admin=admin)).access_token


async def test_seed_then_browse_every_page_once(
    mesh: MeshProcess, http: aiohttp.ClientSession
) -> None:
    code, output = await mesh_cli(mesh, "seed", "--count", "120")
    assert code == 0, output
    assert "added 120 products" in output
    code, output = await mesh_cli(mesh, "seed", "--count", "120")
    assert "added 0 products" in output  # idempotent
    status, _, categories = await call(http, "GET", f"{mesh.gateway}/api/v1/categories")
    assert status == 200
    assert sum(c["productCount"] for c in categories["categories"]) >= 120
    seen: list[str] = []
    url = f"{mesh.gateway}/api/v1/products?pageSize=25&orderBy=price"
    token = ""
    while True:
        status, _, page = await call(http, "GET", url + (f"&pageToken={token}" if token else ""))
        assert status == 200, page
        seen += [p["id"] for p in page["products"]]
        prices = [p["priceCents"] for p in page["products"]]
        assert prices == sorted(prices)
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert len(seen) == len(set(seen)) >= 120
    name_word = page["products"][0]["name"].split()[0]
    status, _, found = await call(
        http, "GET", f"{mesh.gateway}/api/v1/products", params={"q": name_word}
    )
    assert status == 200
    assert any(name_word.lower() in p["name"].lower() for p in found["products"])


async def test_etag_admin_writes_and_reservations(
    mesh: MeshProcess, http: aiohttp.ClientSession
) -> None:
    admin = await signed_in(mesh, http, admin=True)
    user = await signed_in(mesh, http)
    product = {
        "sku": f"E2E-{uuid.uuid4().hex[:8]}",
        "name": "Copper kettle",
        "description": "Whistles; O'Reilly's; DROP TABLE products; --",
        "priceCents": 4500,
        "currency": "EUR",
        "category": "kitchen",
        "stock": 3,
        "attributes": {"litres": 1.5},
    }
    status, _, problem = await call(
        http, "POST", f"{mesh.gateway}/api/v1/products", user, json=product
    )
    assert status == 403, problem
    status, _, created = await call(
        http, "POST", f"{mesh.gateway}/api/v1/products", admin, json=product
    )
    assert status == 200, created
    assert created["description"] == product["description"]  # stored literally
    url = f"{mesh.gateway}/api/v1/products/{created['id']}"
    status, headers, _ = await call(http, "GET", url)
    etag = headers["ETag"]
    status, headers, body = await call(http, "GET", url, headers={"If-None-Match": etag})
    assert (status, body) == (304, None)
    status, _, updated = await call(
        http, "PATCH", url, admin, json={"priceCents": 4200}, headers={"If-Match": etag}
    )
    assert status == 200, updated
    status, _, problem = await call(
        http, "PATCH", url, admin, json={"priceCents": 1}, headers={"If-Match": etag}
    )
    assert status == 412, problem
    status, _, fresh = await call(http, "GET", url)
    assert fresh["priceCents"] == 4200  # a read after a write is never stale

    reserve = f"{url}:reserve"
    status, _, problem = await call(
        http, "POST", reserve, user, json={"quantity": 4, "idempotencyKey": "k-too-many"}
    )
    assert status == 409
    assert problem["availableStock"] == 3
    status, _, first = await call(
        http, "POST", reserve, user, json={"quantity": 2, "idempotencyKey": "k-1"}
    )
    assert (status, first["remainingStock"]) == (200, 1)
    status, _, replay = await call(
        http, "POST", reserve, user, json={"quantity": 2, "idempotencyKey": "k-1"}
    )
    assert replay["reservationId"] == first["reservationId"]
    status, _, problem = await call(
        http, "POST", reserve, user, json={"quantity": 1, "idempotencyKey": "k-1"}
    )
    assert status == 422, problem
    status, _, released = await call(
        http,
        "POST",
        f"{mesh.gateway}/api/v1/reservations/{first['reservationId']}:release",
        user,
        json={},
    )
    assert status == 200, released
    status, _, fresh = await call(http, "GET", url)
    assert fresh["stock"] == 3


@pytest.mark.parametrize(
    "query",
    [
        "pageSize=0",
        "pageSize=101",
        "pageSize=-1",
        "pageToken=not-a-token",
        "q=" + "x" * 10_000,
        "orderBy=sideways",
    ],
)
async def test_bad_list_parameters_are_400(
    mesh: MeshProcess, http: aiohttp.ClientSession, query: str
) -> None:
    status, headers, problem = await call(http, "GET", f"{mesh.gateway}/api/v1/products?{query}")
    assert status == 400, (query, problem)
    assert headers["Content-Type"].startswith("application/problem+json")
