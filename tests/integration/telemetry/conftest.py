"""A real mesh (`mesh up`, one for the whole package) exporting its traces to an OTLP
receiver in the test process.

Head sampling is off (``OTEL_TRACES_SAMPLER_ARG=0``): a trace is recorded only because a
client sent a sampled ``traceparent``, because it links to a sampled trace, or because it
ended in an error. So every span a test finds is there for the reason the test states, and
background work never shows. Two chat replicas, so that fan-out crosses processes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from mesh.harness import BackingUrls, free_port
from tests.e2e.mesh_process import MeshProcess, drop_mesh_databases, mesh_env, start_mesh
from tests.otlp_receiver import OtlpReceiver, otlp_receiver

READY = "the mesh is ready"


@pytest.fixture(scope="package")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest_asyncio.fixture(scope="package")
async def traced_mesh(
    backing: BackingUrls, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MeshProcess]:
    data_dir: Path = tmp_path_factory.mktemp("traced-mesh")
    env, ports, ops_ports, namespace = mesh_env(
        {
            "MESH_POSTGRES_DSN": backing.postgres_dsn,
            "MESH_REDIS_URL": backing.redis_url,
            "MESH_MONGO_URL": backing.mongo_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_TRACES_SAMPLER_ARG": "0",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 0.1 s, not every 5 s
            "MESH_ENV": "telemetry-test",
            "MESH_GATEWAY_RATE_LIMITS": "false",
            "MESH_CHAT_REPLICAS": "2",
            "MESH_CHAT_PORTS": f"{free_port()},{free_port()}",
            "MESH_CHAT_OPS_PORTS": f"{free_port()},{free_port()}",
        },
        data_dir,
    )
    mesh = start_mesh(env, ports, ops_ports, namespace, data_dir / "mesh-up.log")
    try:
        deadline = time.monotonic() + 150
        while READY not in mesh.output():
            if mesh.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mesh up did not get ready:\n{mesh.output()[-4000:]}")
            await asyncio.sleep(0.2)
        yield mesh
    finally:
        if mesh.process.poll() is None:
            mesh.stop()
        drop_mesh_databases(backing.postgres_dsn, namespace)


def chat_ports(mesh: MeshProcess) -> list[int]:
    return [int(p) for p in mesh.env["MESH_CHAT_PORTS"].split(",")]


def chat_ops_ports(mesh: MeshProcess) -> list[int]:
    return [int(p) for p in mesh.env["MESH_CHAT_OPS_PORTS"].split(",")]


def new_traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """(header, trace id, span id) of a client's own span."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id
