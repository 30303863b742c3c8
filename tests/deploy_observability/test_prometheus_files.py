"""deployments/prometheus: the scrape config, the rules and their unit tests."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from mesh.topology import PROCESSES
from tests.deploy_observability.promql import PROMETHEUS, RULES, alerting_rules, metric_names

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian: prometheus)")

# The alerts the issue asks for, by what they watch.
REQUIRED_ALERTS = {
    "availability": "MeshTargetDown",
    "readiness": "MeshProcessNotReady",
    "5xx ratio over 5%": "MeshHttp5xxRatioHigh",
    "gRPC server faults over 5%": "MeshGrpcServerFaultRatioHigh",
    "p95 over 1 s": "MeshHttpLatencyP95High",
    "gRPC p95 over 1 s": "MeshGrpcLatencyP95High",
    "breaker open": "MeshGatewayBreakerOpen",
    "rate-limit fallback active": "MeshGatewayRateLimitFallbackActive",
    "stream lag growing": "MeshStreamConsumerLagGrowing",
    "chat send-queue drops": "MeshChatSendQueueDrops",
    "DB pool saturated": "MeshDbPoolSaturated",
}


def promtool(*args: str, cwd: str | None = None) -> str:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_promtool
def test_promtool_accepts_the_config_and_the_rules() -> None:
    promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    promtool("check", "rules", *map(str, RULES))


@needs_promtool
def test_the_rule_unit_tests_pass() -> None:
    tests = sorted(p.name for p in (PROMETHEUS / "tests").glob("*.yml"))
    assert tests
    assert "SUCCESS" in promtool("test", "rules", *tests, cwd=str(PROMETHEUS / "tests"))


def test_every_process_is_scraped_on_its_ops_port() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for spec in PROCESSES:
        job = jobs[spec.name]
        if spec.max_replicas > 1:  # replicas behind one name: every A record is a target
            (sd,) = job["dns_sd_configs"]
            assert (sd["names"], sd["type"], sd["port"]) == ([spec.name], "A", spec.ops_port)
        else:
            (static,) = job["static_configs"]
            assert static["targets"] == [f"{spec.name}:{spec.ops_port}"]
    assert config["rule_files"] == ["rules/*.yml"]


def test_the_required_alerts_exist_with_severity_and_runbook() -> None:
    alerts = alerting_rules()
    missing = {what: name for what, name in REQUIRED_ALERTS.items() if name not in alerts}
    assert not missing
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), name
        assert len(annotations["runbook"].split()) >= 30, f"{name}: a runbook says what to do"


def test_every_alert_is_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            case: dict[str, Any]
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert set(alerting_rules()) <= fired
    assert set(alerting_rules()) <= quiet


def test_alerts_select_the_mesh_jobs_only_where_they_name_jobs() -> None:
    up = alerting_rules()["MeshTargetDown"]["expr"]
    assert metric_names(up) == {"up"}
    for spec in PROCESSES:
        assert spec.name in up
