"""``python -m gateway [--workers N]``: the gateway, as one process or as N workers.

One worker (``--workers 1``, ``MESH_GATEWAY_WORKERS=1``, or a one-core machine) is the
gateway process itself; more make this process their parent (`gateway.workers`).
"""

from __future__ import annotations

import os
import sys

from gateway.settings import GatewaySettings
from gateway.workers import parse_workers, run_workers, worker_index
from mesh.runner import EX_CONFIG, run_process
from mesh.settings import Env, SettingsError
from mesh.topology import GATEWAY


def main() -> None:
    workers = parse_workers(sys.argv[1:])
    env = Env()
    # The app (and gRPC with it) is imported only where it serves: a parent never needs it.
    if worker_index(env) is not None:  # started by a parent: share its ports
        from gateway.server import serve_worker

        run_process(GATEWAY, GatewaySettings.from_env, serve_worker)
    if workers is None:
        try:
            workers = GatewaySettings.from_env(env).workers
        except SettingsError as exc:
            print(f"{GATEWAY.name}: {exc}", file=sys.stderr, flush=True)
            sys.exit(EX_CONFIG)
    if workers == 1:
        from gateway.server import serve

        run_process(GATEWAY, GatewaySettings.from_env, serve)
    run_workers(workers, env, os.environ)


main()
