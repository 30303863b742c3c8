"""`mesh up` where nothing is configured: the embedded servers start, the data in the data
directory survives a restart, and a taken port stops everything with a clear line."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import aiohttp

from mesh.backing_settings import MONGO_VAR, POSTGRES_VAR, REDIS_VAR
from tests.e2e.conftest import READY
from tests.e2e.mesh_process import mesh_env, pid_alive, start_mesh

NOTHING_CONFIGURED = {POSTGRES_VAR: "", REDIS_VAR: "", MONGO_VAR: ""}


async def register(gateway: str, email: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{gateway}/api/v1/auth/register",
            json={"email": email, "password": "a long enough secret", "displayName": "Solo"},
        ) as response,
    ):
        return response.status


async def test_embedded_backing_services_and_data_that_survives_a_restart(
    tmp_path: Path,
) -> None:
    env, ports, ops_ports, namespace = mesh_env(NOTHING_CONFIGURED, tmp_path / "data")
    for run, expected in ((1, 200), (2, 409)):
        mesh = start_mesh(env, ports, ops_ports, namespace, tmp_path / f"run{run}.log")
        try:
            mesh.wait_for(READY, timeout=150)
            output = mesh.output()
            for name in ("postgres", "redis", "mongo"):
                assert f"embedded {name} ready" in output, output[-3000:]
            # The second run finds the account the first one made: nothing was lost.
            assert await register(mesh.gateway, "solo@example.org") == expected
        finally:
            code, elapsed = mesh.stop(signal.SIGTERM)
        assert code == 0, mesh.output()[-3000:]
        assert elapsed < 10
    assert (tmp_path / "data" / "postgres").is_dir()


def test_a_taken_port_is_named_and_nothing_is_left_running(tmp_path: Path) -> None:
    env, ports, ops_ports, namespace = mesh_env(NOTHING_CONFIGURED, tmp_path / "data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["gateway"]))
        taken.listen()
        mesh = start_mesh(env, ports, ops_ports, namespace, tmp_path / "taken.log")
        code = mesh.process.wait(timeout=30)
    assert code == 1
    output = mesh.output()
    assert (
        f"mesh up: gateway http port {ports['gateway']} (MESH_GATEWAY_PORT) is already in use"
    ) in output
    assert not any(pid_alive(pid) for group in mesh.child_pids().values() for pid in group)
    assert "started " not in output


def test_a_child_that_cannot_start_stops_the_others(tmp_path: Path) -> None:
    env, ports, ops_ports, namespace = mesh_env(NOTHING_CONFIGURED, tmp_path / "data")
    env["MESH_CHAT_HEARTBEAT_SECONDS"] = "soon"  # only chat reads it: chat exits with 78
    mesh = start_mesh(env, ports, ops_ports, namespace, tmp_path / "fatal.log")
    code = mesh.process.wait(timeout=150)
    output = mesh.output()
    assert code == 1, output[-3000:]
    assert "chat: MESH_CHAT_HEARTBEAT_SECONDS: expected a number, got 'soon'" in output
    assert "mesh up: chat cannot start" in output
    started = [pid for group in mesh.child_pids().values() for pid in group]
    assert len(started) == 5
    assert not any(pid_alive(pid) for pid in started)
