"""docker-compose.prod.yml: `docker-compose config` accepts it, and it meets the policies."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.deploykit import (
    ENV_SECRET,
    ROOT,
    check_compose,
    compose_config,
    env_file_from_example,
    tool,
)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    env = env_file_from_example(ROOT / ".env.example", tmp_path_factory.mktemp("env") / ".env")
    return compose_config(ROOT, env)


def test_compose_meets_the_policies(config: dict[str, object]) -> None:
    assert check_compose(config) == []


def test_env_example_holds_no_secret() -> None:
    secrets = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#") and ENV_SECRET.search(key):
            secrets[key] = value
    assert {"POSTGRES_PASSWORD", "MESH_USERS_SIGNING_KEYS", "REDIS_PASSWORD"} <= set(secrets)
    assert all(value == "" for value in secrets.values()), secrets


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    """The template as is (secrets empty) is rejected, naming the missing variable."""
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text())
    result = subprocess.run(
        [
            tool("docker-compose"), "--project-directory", str(ROOT), "--env-file", str(env),
            "-f", str(ROOT / "docker-compose.prod.yml"), "config", "--quiet",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert (
        "PASSWORD" in result.stderr
        or "SIGNING_KEYS" in result.stderr
        or "SECRET" in (result.stderr)
    )


def test_secrets_reach_only_the_processes_that_need_them(config: dict[str, object]) -> None:
    services = config["services"]
    assert isinstance(services, dict)
    needs = {
        "MESH_USERS_SIGNING_KEYS": {"users"},
        "MESH_USERS_PAGE_TOKEN_SECRET": {"users"},
        "MESH_CATALOG_PAGE_TOKEN_SECRET": {"catalog"},
        "MESH_POSTGRES_DSN": {"users", "catalog", "migrate"},
        "MESH_MONGO_URL": {"analytics", "chat"},
    }
    for variable, allowed in needs.items():
        having = {n for n, s in services.items() if variable in (s.get("environment") or {})}
        assert having == allowed, variable
