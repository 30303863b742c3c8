"""The mesh's processes, their ports and the variables that override them: one table.

Settings, the supervisor (`mesh up`), the gateway's upstream defaults and the README all
read this table, so a port is written down exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    module: str  # run as `python -m <module>`
    kind: str  # "http" or "grpc"
    port: int
    ops_port: int
    max_replicas: int = 1  # above 1, `mesh up` can run several (MESH_<NAME>_REPLICAS)

    @property
    def env_prefix(self) -> str:
        return f"MESH_{self.name.upper()}"

    @property
    def replicas_var(self) -> str:
        return f"{self.env_prefix}_REPLICAS"

    @property
    def ports_var(self) -> str:
        """A comma list of ports for the replicas (instead of consecutive ones)."""
        return f"{self.env_prefix}_PORTS"

    @property
    def ops_ports_var(self) -> str:
        return f"{self.env_prefix}_OPS_PORTS"

    @property
    def port_var(self) -> str:
        return f"{self.env_prefix}_PORT"

    @property
    def ops_port_var(self) -> str:
        return f"{self.env_prefix}_OPS_PORT"


GATEWAY: Final = ProcessSpec("gateway", "gateway", "http", 8080, 9100)
USERS: Final = ProcessSpec("users", "services.users", "grpc", 50051, 9101)
CATALOG: Final = ProcessSpec("catalog", "services.catalog", "grpc", 50052, 9102)
ANALYTICS: Final = ProcessSpec("analytics", "services.analytics", "grpc", 50053, 9103)
CHAT: Final = ProcessSpec("chat", "services.chat", "http", 8081, 9104, max_replicas=16)

PROCESSES: Final = (USERS, CATALOG, ANALYTICS, CHAT, GATEWAY)  # start order: gateway last
BY_NAME: Final = {p.name: p for p in PROCESSES}

# Embedded backing services for local runs (`mesh up` without configured URLs).
EMBEDDED_POSTGRES_PORT: Final = 15432
EMBEDDED_REDIS_PORT: Final = 16379
EMBEDDED_MONGO_PORT: Final = 17017
