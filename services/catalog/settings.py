"""Settings of the catalog service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from mesh.backing_settings import StoreUrls
from mesh.cache import CacheSettings
from mesh.settings import Env, Secret, SettingsError

PAGE_TOKEN_SECRET_VAR: Final = "MESH_CATALOG_PAGE_TOKEN_SECRET"
PAGE_TOKEN_SECRET_MIN: Final = 32


@dataclass(frozen=True, slots=True)
class CatalogSettings:
    stores: StoreUrls
    # Cache-aside of reads in Redis; off serves every read from PostgreSQL (benchmarks).
    cache_enabled: bool = True
    cache: CacheSettings = field(default_factory=CacheSettings)
    # Signs page tokens. Unset: a random key made on first start and kept in the catalog
    # database (table service_secrets), so that every replica shares it.
    page_token_secret: Secret | None = None
    db_pool_size: int = 10
    outbox_poll_seconds: float = 1.0

    @classmethod
    def from_env(cls, env: Env) -> CatalogSettings:
        return cls(
            stores=StoreUrls.from_env(env),
            cache_enabled=env.bool("MESH_CATALOG_CACHE", True),
            cache=CacheSettings(
                ttl_seconds=env.float(
                    "MESH_CATALOG_CACHE_TTL_SECONDS", 300.0, minimum=1.0, maximum=86_400.0
                ),
                timeout_seconds=env.float(
                    "MESH_CATALOG_REDIS_TIMEOUT_SECONDS", 0.25, minimum=0.01, maximum=10.0
                ),
                circuit_seconds=env.float(
                    "MESH_CATALOG_CACHE_CIRCUIT_SECONDS", 5.0, minimum=0.1, maximum=300.0
                ),
            ),
            page_token_secret=_page_token_secret(env),
            db_pool_size=env.int("MESH_CATALOG_DB_POOL_SIZE", 10, minimum=2, maximum=200),
            outbox_poll_seconds=env.float(
                "MESH_CATALOG_OUTBOX_POLL_SECONDS", 1.0, minimum=0.05, maximum=60.0
            ),
        )


def _page_token_secret(env: Env) -> Secret | None:
    secret = env.secret(PAGE_TOKEN_SECRET_VAR)
    if secret is not None and len(secret.value) < PAGE_TOKEN_SECRET_MIN:
        raise SettingsError(
            PAGE_TOKEN_SECRET_VAR, f"must be at least {PAGE_TOKEN_SECRET_MIN} characters long"
        )
    return secret
