"""Settings every mesh process shares, read once at start."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from mesh import __version__
from mesh.auth.tokens import TokenSettings
from mesh.settings import Env
from mesh.topology import USERS, ProcessSpec

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class CommonSettings:
    service_name: str
    version: str
    environment: str
    instance_id: str
    log_level: str
    host: str
    port: int
    port_var: str
    ops_port: int
    ops_port_var: str
    grace_seconds: float
    trace_ratio: float
    otlp_endpoint: str | None
    tokens: TokenSettings
    users_addresses: tuple[str, ...]

    @classmethod
    def from_env(cls, env: Env, spec: ProcessSpec) -> CommonSettings:
        return cls(
            service_name=spec.name,
            version=env.str("MESH_VERSION", __version__),
            environment=env.str("MESH_ENV", "local"),
            instance_id=env.str("MESH_INSTANCE_ID", f"{socket.gethostname()}-{os.getpid()}"),
            log_level=env.choice("MESH_LOG_LEVEL", "info", LOG_LEVELS),
            host=env.str("MESH_HOST", "127.0.0.1"),
            port=env.port(spec.port_var, spec.port),
            port_var=spec.port_var,
            ops_port=env.port(spec.ops_port_var, spec.ops_port),
            ops_port_var=spec.ops_port_var,
            grace_seconds=env.float("MESH_SHUTDOWN_GRACE_SECONDS", 5.0, minimum=0, maximum=300),
            trace_ratio=env.float("OTEL_TRACES_SAMPLER_ARG", 1.0, minimum=0.0, maximum=1.0),
            otlp_endpoint=env.url("OTEL_EXPORTER_OTLP_ENDPOINT", None, ("http", "https")),
            tokens=TokenSettings.from_env(env),
            # Where the users service publishes the token keys (its JWK Set).
            users_addresses=env.addresses("MESH_USERS_ADDR", f"127.0.0.1:{USERS.port}"),
        )
