"""Label values stay bounded: 1,000 distinct ids in URLs are not 1,000 series."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.mesh_process import MeshProcess

DISTINCT_IDS = 1000
WEBDAV_METHODS = ("PROPFIND", "MKCOL", "LOCK", "UNLOCK", "SEARCH")  # HTTP parsers know these
FAMILIES = ("mesh_http_server_requests", "mesh_http_server_request_duration_seconds")


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, ops_port: int) -> Series:
    """Every sample's value by (name, labels)."""
    async with http.get(f"http://127.0.0.1:{ops_port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def count(series: Series, prefixes: Iterable[str]) -> int:
    return sum(1 for name, _ in series if name.startswith(tuple(prefixes)))


def label_values(series: Series, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for sample, labels in series if sample == name}


def total(series: Series, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (sample, have), v in series.items() if sample == name and wanted <= have)


async def test_a_thousand_ids_in_urls_do_not_make_a_thousand_series(
    traced_mesh: MeshProcess,
) -> None:
    gateway, ops = traced_mesh.gateway, traced_mesh.ops_ports
    ids = [uuid.uuid4().hex for _ in range(DISTINCT_IDS)]
    async with aiohttp.ClientSession() as http:
        # Every kind of request once first, so that only ids differ afterwards.
        await _get(http, f"{gateway}/api/v1/products/{uuid.uuid4()}")
        await _get(http, f"{gateway}/no/such/path/{uuid.uuid4().hex}")
        before = await scrape(http, ops["gateway"])
        catalog_before = await scrape(http, ops["catalog"])
        gate = asyncio.Semaphore(16)

        async def one(index: int, product_id: str) -> None:
            async with gate:
                await _get(http, f"{gateway}/api/v1/products/{uuid.UUID(product_id)}")
                await _get(http, f"{gateway}/no/such/path/{product_id}")
                if index % 50 == 0:  # methods no route knows are one label value too
                    method = WEBDAV_METHODS[index // 50 % len(WEBDAV_METHODS)]
                    await _get(http, f"{gateway}/api/v1/products/{product_id}", method)

        await asyncio.gather(*(one(i, product_id) for i, product_id in enumerate(ids)))
        after = await scrape(http, ops["gateway"])
        catalog_after = await scrape(http, ops["catalog"])
    # 2,020 requests with 1,000 distinct ids: a handful of new series at most (the "other"
    # method), never one per id.
    grown = count(after, FAMILIES) - count(before, FAMILIES)
    assert 0 <= grown <= 20, grown
    grpc = ("mesh_grpc_server",)
    assert count(catalog_after, grpc) - count(catalog_before, grpc) <= 10
    requests = "mesh_http_server_requests_total"
    routes = label_values(after, requests, "route")
    assert {"/api/v1/products/{id}", "unmatched"} <= routes
    assert not any(product_id in route for route in routes for product_id in ids)
    methods = label_values(after, requests, "method")
    assert "other" in methods
    assert not methods & set(WEBDAV_METHODS)
    # ...and every request was counted, under its template.
    for route in ("/api/v1/products/{id}", "unmatched"):
        counted = total(after, requests, route=route) - total(before, requests, route=route)
        assert counted >= DISTINCT_IDS, (route, counted)


async def _get(http: aiohttp.ClientSession, url: str, method: str = "GET") -> None:
    async with http.request(method, url) as response:
        await response.read()
        assert response.status in {400, 404, 405}, (url, response.status)
