"""Settings of the catalog service."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.backing_settings import StoreUrls
from mesh.settings import Env


@dataclass(frozen=True, slots=True)
class CatalogSettings:
    stores: StoreUrls

    @classmethod
    def from_env(cls, env: Env) -> CatalogSettings:
        return cls(stores=StoreUrls.from_env(env))
