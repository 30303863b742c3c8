"""The image's HEALTHCHECK: GET /health/ready on this process's ops port; exit 0 when 200.

The process is named by MESH_PROCESS (set by each Dockerfile target); its ops port is the one
it binds: MESH_<NAME>_OPS_PORT when set, else the default from mesh.topology. Standard library
and mesh.topology only, so a check costs one short-lived interpreter and no third-party import.
`python /app/healthcheck.py live` checks /health/live instead.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from mesh.topology import BY_NAME


def main(argv: list[str]) -> int:
    name = os.environ.get("MESH_PROCESS", "")
    spec = BY_NAME.get(name)
    if spec is None:
        print(f"healthcheck: MESH_PROCESS={name!r} names no process", file=sys.stderr)
        return 1
    port = os.environ.get(spec.ops_port_var) or str(spec.ops_port)
    check = argv[1] if len(argv) > 1 else "ready"
    url = f"http://127.0.0.1:{port}/health/{check}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (OSError, urllib.error.URLError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
