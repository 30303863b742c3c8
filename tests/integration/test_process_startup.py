"""A process that cannot start says why in one line naming the variable, and exits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from mesh.harness import free_port

EX_CONFIG = 78


def start(module: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "variable", "value"),
    [
        ("services.users", "MESH_USERS_PORT", "not-a-port"),
        ("services.catalog", "MESH_CATALOG_OPS_PORT", "99999"),
        ("services.chat", "MESH_CHAT_HEARTBEAT_SECONDS", "soon"),
        ("gateway", "MESH_GATEWAY_PORT", "http"),
        ("services.analytics", "MESH_MONGO_URL", "postgres://x"),
    ],
)
def test_bad_setting_is_one_line_naming_the_variable(
    module: str, variable: str, value: str
) -> None:
    result = start(module, **{variable: value})
    assert result.returncode == EX_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_one_line_naming_the_variable() -> None:
    dead = free_port()
    result = start(
        "services.users",
        MESH_POSTGRES_DSN=f"postgresql://postgres@127.0.0.1:{dead}/x",
        MESH_USERS_PORT=str(free_port()),
        MESH_USERS_OPS_PORT=str(free_port()),
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("users: MESH_POSTGRES_DSN: cannot connect to ")
    assert "Traceback" not in result.stderr


def test_port_in_use_is_fatal_and_named(backing: object) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = start(
            "services.chat",
            MESH_CHAT_PORT=str(port),
            MESH_CHAT_OPS_PORT=str(free_port()),
            MESH_MONGO_URL=backing.mongo_url,  # type: ignore[attr-defined]
            MESH_REDIS_URL=backing.redis_url,
        )  # type: ignore[attr-defined]
    assert result.returncode == EX_CONFIG
    assert (
        result.stderr.strip() == f"chat: MESH_CHAT_PORT: port {port} on 127.0.0.1 is already in use"
    )
