"""deployments/grafana: data sources, dashboard provisioning, the dashboards' JSON."""

from __future__ import annotations

import re

import yaml

from tests.deploy_observability.promql import GRAFANA, dashboard_queries, dashboards, panels

PROVISIONING = GRAFANA / "provisioning"
REQUIRED = {"mesh-overview", "mesh-gateway", "mesh-chat", "mesh-analytics"}
COMPOSE_DASHBOARDS_PATH = "/etc/grafana/dashboards"  # where docker-compose.prod.yml mounts them


def datasources() -> dict[str, dict[str, object]]:
    documents = [
        yaml.safe_load(p.read_text()) for p in (PROVISIONING / "datasources").glob("*.yml")
    ]
    return {d["uid"]: d for document in documents for d in document["datasources"]}


def test_prometheus_and_jaeger_are_provisioned_and_exemplars_open_jaeger() -> None:
    sources = datasources()
    assert sources["prometheus"]["type"] == "prometheus"
    assert sources["jaeger"]["type"] == "jaeger"
    json_data = sources["prometheus"]["jsonData"]
    assert isinstance(json_data, dict)
    # The label the processes put on exemplars (mesh.telemetry.exemplar) is `trace_id`.
    assert json_data["exemplarTraceIdDestinations"] == [
        {"name": "trace_id", "datasourceUid": "jaeger"}
    ]


def test_dashboards_are_provisioned_from_the_mounted_folder() -> None:
    (document,) = [
        yaml.safe_load(p.read_text()) for p in (PROVISIONING / "dashboards").glob("*.yml")
    ]
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == COMPOSE_DASHBOARDS_PATH


def test_the_dashboards_exist_once_each_and_query_provisioned_sources() -> None:
    boards = dashboards()
    uids = [board["uid"] for board in boards.values()]
    assert len(uids) == len(set(uids))
    assert set(uids) >= REQUIRED
    known = set(datasources())
    for name, board in boards.items():
        assert board["title"].startswith("Mesh / "), name
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] in known, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in known


def test_latency_panels_link_to_traces_through_exemplars() -> None:
    latency = re.compile(r"_seconds_bucket\b")
    checked = 0
    for name, board in dashboards().items():
        for panel in panels(board):
            for target in panel.get("targets", []):
                histogram = latency.search(target["expr"])
                # Exemplars exist on the mesh's own histograms (the store's have none).
                if histogram and "mesh_" in target["expr"]:
                    assert target["exemplar"] is True, (name, panel["title"])
                    checked += 1
    assert checked >= 8


def test_every_query_is_promql_with_balanced_brackets() -> None:
    for name, board in dashboards().items():
        for where, expr in dashboard_queries(board):
            for opening, closing in ("()", "{}", "[]"):
                assert expr.count(opening) == expr.count(closing), (name, where, expr)
