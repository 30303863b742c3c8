"""Prometheus metrics shared by every process (RED for HTTP routes and gRPC methods).

Label values are bounded: HTTP routes are labelled by their template, gRPC calls by
service and method name, never by raw paths or ids.

Several processes of one service (the gateway's ``--workers``) run prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, see `mesh.ops`): counters and histograms
are summed over the processes; every Gauge must say how its values combine with
``multiprocess_mode`` (ignored by a single process): ``livesum`` for amounts a process holds
(open connections, in-flight calls), ``livemax``/``livemin`` for states where the worst
process speaks for all (``live``: only processes still running count), ``mostrecent`` for
one value every process sets alike. Multiprocess mode keeps no exemplars, which is why
containers run one gateway process each (``MESH_GATEWAY_WORKERS=1``) and scale by replicas.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

HTTP_REQUESTS: Final = Counter(
    "mesh_http_server_requests_total", "HTTP requests handled.", ["route", "method", "status"]
)
HTTP_DURATION: Final = Histogram(
    "mesh_http_server_request_duration_seconds",
    "HTTP request handling time.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
GRPC_HANDLED: Final = Counter(
    "mesh_grpc_server_handled_total",
    "gRPC calls handled.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_DURATION: Final = Histogram(
    "mesh_grpc_server_handling_seconds",
    "gRPC call handling time.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
PROCESS_READY: Final = Gauge(
    "mesh_process_ready",
    "1 while the process (with workers: every live worker) reports ready.",
    multiprocess_mode="livemin",
)
