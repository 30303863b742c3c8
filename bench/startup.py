"""Scenario: how long `mesh up` takes to report ready, cold and warm.

Cold: an empty data directory (embedded PostgreSQL runs initdb, every database is created
and migrated). Warm: the same directory again. Nothing is configured, so the embedded
PostgreSQL, Redis and MongoDB-wire servers start as they do for a new user. Each run is on
free loopback ports and stops itself (SIGINT) once ready.

    python -m bench.startup --runs 3
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mesh.harness import free_port
from mesh.topology import PROCESSES

READY = re.compile(r"the mesh is ready in ([0-9.]+) s")


def _env(data_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "MESH_DATA_DIR": str(data_dir),
        "MESH_POSTGRES_DSN": "",
        "MESH_REDIS_URL": "",
        "MESH_MONGO_URL": "",
        "MESH_LOG_LEVEL": "warning",
        "MESH_EMBEDDED_POSTGRES_PORT": str(free_port()),
        "MESH_EMBEDDED_REDIS_PORT": str(free_port()),
        "MESH_EMBEDDED_MONGO_PORT": str(free_port()),
    }
    for spec in PROCESSES:
        env[spec.port_var] = str(free_port())
        env[spec.ops_port_var] = str(free_port())
    return env


def time_to_ready(data_dir: Path, env: dict[str, str], timeout: float = 180) -> tuple[float, float]:
    """Wall seconds from exec to the ready banner, and the seconds `mesh up` itself reports."""
    mesh = str(Path(sys.executable).parent / "mesh")
    started = time.monotonic()
    process = subprocess.Popen(
        [mesh, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            match = READY.search(line)
            if match:
                return time.monotonic() - started, float(match.group(1))
            if time.monotonic() - started > timeout:
                break
        raise RuntimeError("mesh up did not become ready")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(args.runs):
        data_dir = Path(tempfile.mkdtemp(prefix="mesh-bench-"))
        try:
            env = _env(data_dir)
            cold.append(time_to_ready(data_dir, env)[0])
            warm.append(time_to_ready(data_dir, env)[0])
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    for name, values in (("cold", cold), ("warm", warm)):
        print(
            f"{name}: median {statistics.median(values):.1f} s "
            f"(min {min(values):.1f}, max {max(values):.1f}, runs {len(values)}, "
            f"cores {os.cpu_count()})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
