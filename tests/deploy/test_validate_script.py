"""The end-to-end proof: `make validate`'s script fails on a copy of the repository's
deployment files with one policy dropped, and says which."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.deploykit import REPO, ROOT, tool

# Only what this suite owns: the Prometheus and Grafana content has its own checks.
COPIED = (
    "deployments/k8s",
    "deployments/docker",
    "deployments/validate.sh",
    "docker-compose.prod.yml",
    ".env.example",
    ".dockerignore",
    "pyproject.toml",
)


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in COPIED:
        source = ROOT / name
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("secrets.env"))
        else:
            shutil.copyfile(source, copy / name)
    return copy


def _validate(copy: Path) -> subprocess.CompletedProcess[str]:
    for name in ("kubectl", "docker-compose", "promtool", "hadolint", "kubernetes-validate"):
        tool(name)  # skips (or fails under make validate) when a validator is missing
    env = {
        **os.environ,
        "MESH_DEPLOY_ROOT": str(copy),
        "KUBERNETES_VERSIONS": "1.30.0",
        # only the Kubernetes policies: enough to show the breakage is caught, and no recursion
        "MESH_VALIDATE_PYTEST": "tests/deploy/test_kubernetes.py",
        "MESH_DEPLOY_NESTED": "1",
    }
    return subprocess.run(
        ["bash", str(REPO / "deployments/validate.sh")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.mark.skipif(bool(os.environ.get("MESH_DEPLOY_NESTED")), reason="nested run")
def test_validate_fails_when_a_copy_drops_read_only_root(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    chat = copy / "deployments/k8s/base/chat.yaml"
    text = chat.read_text()
    assert "readOnlyRootFilesystem: true" in text
    chat.write_text(text.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"))
    result = _validate(copy)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Deployment/chat container chat: readOnlyRootFilesystem is not true" in output


@pytest.mark.skipif(bool(os.environ.get("MESH_DEPLOY_NESTED")), reason="nested run")
def test_validate_fails_when_a_copy_breaks_the_schema(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    pdbs = copy / "deployments/k8s/base/pdbs.yaml"
    pdbs.write_text(pdbs.read_text().replace("maxUnavailable: 1", "maxUnavailable: [1]", 1))
    result = _validate(copy)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "did not validate for resource poddisruptionbudget/gateway" in output
