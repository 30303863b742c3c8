"""Where a service finds its backing stores: one URL per kind, one database per service.

`MESH_POSTGRES_DSN` names the server; each service uses its own database on it (`users`,
`catalog`), prefixed by `MESH_NAMESPACE` so tests and several local meshes can share a
server. The same goes for MongoDB databases (`analytics`, `chat`) and Redis key prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.settings import Env, SettingsError, with_database
from mesh.topology import EMBEDDED_MONGO_PORT, EMBEDDED_POSTGRES_PORT, EMBEDDED_REDIS_PORT

POSTGRES_VAR = "MESH_POSTGRES_DSN"
REDIS_VAR = "MESH_REDIS_URL"
MONGO_VAR = "MESH_MONGO_URL"

# Unconfigured, a process looks for the embedded servers a local `mesh up` runs, so that
# `mesh users grant-admin` in a second terminal finds them. Production sets every URL.
DEFAULT_POSTGRES = f"postgresql://postgres@127.0.0.1:{EMBEDDED_POSTGRES_PORT}/postgres"
DEFAULT_REDIS = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
DEFAULT_MONGO = f"mongodb://127.0.0.1:{EMBEDDED_MONGO_PORT}/?directConnection=true"


@dataclass(frozen=True, slots=True)
class StoreUrls:
    postgres_dsn: str
    redis_url: str
    mongo_url: str
    namespace: str

    @classmethod
    def from_env(cls, env: Env) -> StoreUrls:
        return cls(
            postgres_dsn=env.url(POSTGRES_VAR, DEFAULT_POSTGRES, ("postgresql", "postgres"))
            or DEFAULT_POSTGRES,
            redis_url=env.url(REDIS_VAR, DEFAULT_REDIS, ("redis", "rediss", "unix"))
            or DEFAULT_REDIS,
            mongo_url=env.url(MONGO_VAR, DEFAULT_MONGO, ("mongodb", "mongodb+srv"))
            or DEFAULT_MONGO,
            namespace=_namespace(env),
        )

    def postgres_for(self, service: str) -> str:
        return with_database(self.postgres_dsn, self.database_name(service))

    def database_name(self, service: str) -> str:
        return f"{self.namespace}{service}"


def _namespace(env: Env) -> str:
    value = env.str("MESH_NAMESPACE", "")
    if value and not (
        value.replace("_", "").isalnum()
        and value.isascii()
        and value.islower()
        and value[0].isalpha()
    ):
        raise SettingsError(
            "MESH_NAMESPACE",
            f"expected lowercase letters, digits and _ (e.g. 'dev_'), got {value!r}",
        )
    return value
