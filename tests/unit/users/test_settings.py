"""The users service's settings: defaults, and failures naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.settings import Env, SettingsError
from services.users.settings import UsersSettings


def test_defaults() -> None:
    settings = UsersSettings.from_env(Env({}))
    assert (settings.argon2_memory_kib, settings.argon2_time_cost) == (19 * 1024, 2)
    assert settings.signing_keys == ()
    assert settings.signing_keys_dir == Path(".mesh/keys").resolve()
    assert settings.page_token_secret is None
    assert settings.refresh_ttl_seconds == 30 * 24 * 3600
    assert (settings.login_max_attempts, settings.login_window_seconds) == (10, 900)


def test_the_keys_directory_follows_the_data_directory(tmp_path: Path) -> None:
    settings = UsersSettings.from_env(Env({"MESH_DATA_DIR": str(tmp_path)}))
    assert settings.signing_keys_dir == tmp_path / "keys"
    explicit = UsersSettings.from_env(Env({"MESH_USERS_SIGNING_KEYS_DIR": str(tmp_path / "k")}))
    assert explicit.signing_keys_dir == tmp_path / "k"


def test_signing_keys_from_the_environment() -> None:
    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    settings = UsersSettings.from_env(Env({"MESH_USERS_SIGNING_KEYS": pem}))
    assert len(settings.signing_keys) == 1
    assert pem not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (
            "MESH_USERS_SIGNING_KEYS",
            "-----BEGIN PRIVATE KEY-----\nsecretstuff\n-----END PRIVATE KEY-----",
        ),
        ("MESH_USERS_PAGE_TOKEN_SECRET", "too-short-secret"),
        ("MESH_USERS_ARGON2_MEMORY_KIB", "1024"),
        ("MESH_USERS_ARGON2_TIME_COST", "1"),
        ("MESH_USERS_LOGIN_MAX_ATTEMPTS", "0"),
        ("MESH_USERS_LOGIN_WINDOW_SECONDS", "soon"),
        ("MESH_USERS_REFRESH_TTL_SECONDS", "5"),
    ],
)
def test_a_bad_value_names_its_variable_and_hides_secrets(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        UsersSettings.from_env(Env({variable: value}))
    assert caught.value.variable == variable
    assert "secretstuff" not in str(caught.value)
    if variable == "MESH_USERS_PAGE_TOKEN_SECRET":
        assert value not in str(caught.value)


def test_a_page_token_secret_is_hidden() -> None:
    settings = UsersSettings.from_env(Env({"MESH_USERS_PAGE_TOKEN_SECRET": "p" * 40}))
    assert settings.page_token_secret is not None
    assert "p" * 40 not in repr(settings)
