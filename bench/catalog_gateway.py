"""Scenario: a product read through the gateway, cache on vs off, with wrk.

A real mesh (`mesh up` on free loopback ports) is started twice: with the catalog's Redis
cache on, then with `MESH_CATALOG_CACHE=false`. Each time one seeded product is read with
`wrk -c 64` (after a warm-up) and requests/s and p50/p99 are reported; the cache's figure
is the ratio on/off measured in the same run. Needs `wrk` (Debian package `wrk`).

    python -m bench.catalog_gateway [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench.harness.http_load import wrk
from bench.harness.mesh import first_product, store_overrides
from tests.e2e.mesh_process import MESH, mesh_env, start_mesh


def measure(cache: bool, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as scratch:
        data_dir = Path(scratch)
        env, ports, ops_ports, namespace = mesh_env(
            {
                **store_overrides(),
                "MESH_LOG_LEVEL": "warning",
                "MESH_CATALOG_CACHE": str(cache).lower(),
            },
            data_dir,
        )
        mesh = start_mesh(env, ports, ops_ports, namespace, data_dir / "mesh.log")
        try:
            mesh.wait_for("the mesh is ready", timeout=150)
            subprocess.run(
                [MESH, "seed", "--count", "50"],
                env=env,
                check=True,
                capture_output=True,
                timeout=120,
            )
            url = f"{mesh.gateway}/api/v1/products/{first_product(mesh.gateway)}"
            wrk(url, 3)  # warm-up: connections, caches, JIT-free but pools warm
            return asdict(wrk(url, seconds))
        finally:
            mesh.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    on = measure(True, args.seconds)
    off = measure(False, args.seconds)
    for name, figures in (("cache on", on), ("cache off", off)):
        print(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
    print(
        f"ratio on/off requests/s: {on['requests_per_second'] / off['requests_per_second']:.2f}"
        f" (cores {os.cpu_count()}, wrk -t2 -c64 on the same cores)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
