"""The dashboards and Prometheus rules read only metrics the running processes export, and
the latency histograms carry exemplars that name traces (OpenMetrics, when asked for)."""

from __future__ import annotations

import aiohttp
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.deploy_observability.promql import exported_names, required_metrics
from tests.e2e.mesh_process import MeshProcess
from tests.integration.telemetry.conftest import chat_ops_ports, new_traceparent

PROMETHEUS_OWN = {"up"}  # made by Prometheus for every target
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def ops_ports(mesh: MeshProcess) -> dict[str, int]:
    ports = {name: port for name, port in mesh.ops_ports.items() if name != "chat"}
    for index, port in enumerate(chat_ops_ports(mesh)):
        ports[f"chat-{index + 1}"] = port
    return ports


async def scrape(http: aiohttp.ClientSession, port: int, accept: str | None = None) -> str:
    headers = {"Accept": accept} if accept else {}
    async with http.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as response:
        assert response.status == 200
        return await response.text()


async def test_every_metric_a_dashboard_or_rule_reads_is_exported(
    traced_mesh: MeshProcess,
) -> None:
    exported: dict[str, set[str]] = {}
    async with aiohttp.ClientSession() as http:
        for process, port in ops_ports(traced_mesh).items():
            for name in exported_names(await scrape(http, port)):
                exported.setdefault(name, set()).add(process)
    missing = {
        name: sorted(where)
        for name, where in required_metrics().items()
        if name not in exported and name not in PROMETHEUS_OWN
    }
    assert not missing, "read by the operator files but exported by no process:\n" + "\n".join(
        f"  {name}: {', '.join(where)}" for name, where in sorted(missing.items())
    )
    # Each service exports its own signals (not only some process somewhere).
    assert {"gateway"} <= exported["mesh_gateway_breaker_state"]
    assert {"chat-1", "chat-2"} <= exported["mesh_chat_fanout_latency_seconds_bucket"]
    assert {"analytics"} <= exported["mesh_stream_consumer_lag_seconds"]
    assert {"users", "catalog"} <= exported["mesh_db_pool_connections"]


async def test_latency_exemplars_name_the_trace_in_openmetrics(traced_mesh: MeshProcess) -> None:
    header, trace_id, _ = new_traceparent()
    async with aiohttp.ClientSession() as http:
        url = f"{traced_mesh.gateway}/api/v1/categories"
        async with http.get(url, headers={"traceparent": header}) as response:
            assert response.status == 200
        plain = await scrape(http, traced_mesh.ops_ports["gateway"])
        text = await scrape(http, traced_mesh.ops_ports["gateway"], OPENMETRICS)
        catalog = await scrape(http, traced_mesh.ops_ports["catalog"], OPENMETRICS)
    assert "trace_id" not in plain  # the Prometheus text format has no exemplars
    exemplars = {
        family.name: sample.exemplar.labels["trace_id"]
        for source in (text, catalog)
        for family in text_string_to_metric_families(source)
        for sample in family.samples
        if sample.exemplar is not None
        and sample.labels.get("route", "") != "/health"
        and sample.exemplar.labels.get("trace_id") == trace_id
    }
    assert set(exemplars) == {
        "mesh_http_server_request_duration_seconds",
        "mesh_grpc_server_handling_seconds",
    }
