"""/metrics answers OpenMetrics (with exemplars) to a scraper that asks for it, and the
Prometheus text format (without) otherwise."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import Histogram

from mesh.common import CommonSettings
from mesh.lifecycle import Lifecycle
from mesh.ops import create_ops_app
from mesh.settings import Env
from mesh.topology import GATEWAY

LATENCY = Histogram("unit_exposition_seconds", "A latency for this test.", buckets=(0.1, 1.0))
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


async def test_openmetrics_when_asked_carries_the_exemplar() -> None:
    LATENCY.observe(0.05, {"trace_id": TRACE_ID})
    app = create_ops_app(CommonSettings.from_env(Env({}), GATEWAY), Lifecycle())
    async with TestClient(TestServer(app)) as client:
        scraped = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        plain = await client.get("/metrics")
        scraped_text, plain_text = await scraped.text(), await plain.text()
    assert scraped.headers["Content-Type"].startswith("application/openmetrics-text")
    assert f'unit_exposition_seconds_bucket{{le="0.1"}} 1.0 # {{trace_id="{TRACE_ID}"}} 0.05' in (
        scraped_text
    )
    assert scraped_text.rstrip().endswith("# EOF")
    assert plain.headers["Content-Type"].startswith("text/plain")
    assert 'unit_exposition_seconds_bucket{le="0.1"} 1.0' in plain_text
    assert TRACE_ID not in plain_text
