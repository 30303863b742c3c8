"""The rendered overlays meet the deployment policies (one test per policy and overlay)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.deploykit import (
    K8S_CHECKS,
    OVERLAYS,
    PROCESS_NAMES,
    ROOT,
    Rendered,
    flows,
    hpas,
    tool,
)


@pytest.mark.parametrize("check", K8S_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policy_holds(rendered: dict[str, Rendered], overlay: str, check: object) -> None:
    assert callable(check)
    assert check(rendered[overlay]) == []


def test_overlays_differ_where_they_should(rendered: dict[str, Rendered]) -> None:
    configs = {o: rendered[o].config() for o in OVERLAYS}
    assert [configs[o]["MESH_LOG_LEVEL"] for o in OVERLAYS] == ["debug", "info", "info"]
    ratios = [float(configs[o]["OTEL_TRACES_SAMPLER_ARG"]) for o in OVERLAYS]
    assert ratios == sorted(ratios, reverse=True)
    assert ratios[0] == 1.0
    assert ratios[2] <= 0.1
    namespaces = {rendered[o].namespace for o in OVERLAYS}
    assert len(namespaces) == 3
    tags = {
        o: {
            c["image"].rsplit(":", 1)[1]
            for d in rendered[o].of_kind("Deployment")
            if d["metadata"]["name"] in PROCESS_NAMES
            for c in d["spec"]["template"]["spec"]["containers"]
        }
        for o in OVERLAYS
    }
    assert all(len(t) == 1 for t in tags.values()), tags  # one release per environment
    assert len({next(iter(t)) for t in tags.values()}) == 3
    assert not hpas(rendered["dev"])
    assert {h["spec"]["minReplicas"] for h in hpas(rendered["production"]).values()} == {3}


def test_production_reaches_managed_endpoints_only(rendered: dict[str, Rendered]) -> None:
    allowed = flows(rendered["production"])
    assert ("users", "ipBlock", "5432/TCP") in allowed
    assert not any(dst in ("postgres", "mongo", "redis", "jaeger") for _, dst, _ in allowed)


def test_postgres_init_creates_both_databases() -> None:
    compose_sql = ROOT / "deployments/docker/postgres/initdb/10-databases.sql"
    k8s_sql = ROOT / "deployments/k8s/components/backing/10-databases.sql"
    assert compose_sql.read_text() == k8s_sql.read_text()
    text = compose_sql.read_text()
    assert "CREATE DATABASE users;" in text
    assert "CREATE DATABASE catalog;" in text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_validate_accepts_every_object(
    rendered: dict[str, Rendered], overlay: str, tmp_path: Path
) -> None:
    """Offline schema validation (the schemas ship in the kubernetes-validate wheel)."""
    import yaml

    path = tmp_path / f"{overlay}.yaml"
    path.write_text(yaml.safe_dump_all(rendered[overlay].objects))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", "1.30.0", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _git_ignored(path: str) -> bool:
    git = tool("git")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git work tree")
    return subprocess.run([git, "check-ignore", "-q", path], cwd=ROOT, check=False).returncode == 0


def test_kustomize_secret_inputs_are_never_committed() -> None:
    for overlay_or_base in ("base", *(f"overlays/{o}" for o in OVERLAYS)):
        assert _git_ignored(f"deployments/k8s/{overlay_or_base}/secrets.env")
    tracked = subprocess.run(
        [tool("git"), "ls-files", "--", "*secrets.env", ".env"], cwd=ROOT, capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    assert tracked == ""


def test_dotenv_is_never_committed() -> None:
    """docker-compose.prod.yml reads its secrets from .env at the repository root."""
    assert _git_ignored(".env"), "add `.env` to .gitignore"
