from __future__ import annotations

import pytest

from mesh.settings import Env, SettingsError
from services.catalog.settings import CatalogSettings


def test_defaults() -> None:
    settings = CatalogSettings.from_env(Env({}))
    assert settings.cache_enabled
    assert settings.cache.ttl_seconds == 300
    assert settings.cache.timeout_seconds == 0.25
    assert settings.page_token_secret is None
    assert settings.db_pool_size == 10


def test_overrides_and_bad_values() -> None:
    settings = CatalogSettings.from_env(
        Env(
            {
                "MESH_CATALOG_CACHE": "off",
                "MESH_CATALOG_CACHE_TTL_SECONDS": "30",
                "MESH_CATALOG_PAGE_TOKEN_SECRET": "s" * 40,
            }
        )
    )
    assert not settings.cache_enabled
    assert settings.cache.ttl_seconds == 30
    assert "sss" not in repr(settings)
    with pytest.raises(SettingsError, match="MESH_CATALOG_PAGE_TOKEN_SECRET"):
        CatalogSettings.from_env(Env({"MESH_CATALOG_PAGE_TOKEN_SECRET": "short"}))
    with pytest.raises(SettingsError, match="MESH_CATALOG_CACHE"):
        CatalogSettings.from_env(Env({"MESH_CATALOG_CACHE": "maybe"}))
