"""Settings of the users service."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mesh.auth.keys import SigningKey
from mesh.backing_settings import StoreUrls
from mesh.settings import Env, Secret, SettingsError
from services.users.signing import parse_signing_keys

SIGNING_KEYS_VAR: Final = "MESH_USERS_SIGNING_KEYS"
SIGNING_KEYS_DIR_VAR: Final = "MESH_USERS_SIGNING_KEYS_DIR"
PAGE_TOKEN_SECRET_VAR: Final = "MESH_USERS_PAGE_TOKEN_SECRET"
PAGE_TOKEN_SECRET_MIN: Final = 32
REFRESH_TOKEN_DAYS: Final = 30
LOGIN_MAX_ATTEMPTS: Final = 10
LOGIN_WINDOW_SECONDS: Final = 15 * 60


def default_hashing_threads() -> int:
    """One core fewer than the machine has (at least one): measured on 2 cores, two
    hashing threads gave no more logins per second than one, and tripled the p99 of
    unrelated requests during a burst of logins."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass(frozen=True, slots=True)
class UsersSettings:
    stores: StoreUrls
    # argon2id cost; OWASP's floor is m=19 MiB, t=2, p=1.
    argon2_memory_kib: int
    argon2_time_cost: int
    hashing_threads: int
    # Signing keys given as PEM (production); when empty, the keys in `signing_keys_dir`,
    # generated there on first start (local runs). The last key signs; all verify.
    signing_keys: tuple[SigningKey, ...] = ()
    signing_keys_dir: Path = Path(".mesh/keys")
    # Signs the ListUsers page tokens; derived from the signing key when not given.
    page_token_secret: Secret | None = None
    refresh_ttl_seconds: int = REFRESH_TOKEN_DAYS * 24 * 3600
    # Failed logins allowed per account and per client address within the window.
    login_max_attempts: int = LOGIN_MAX_ATTEMPTS
    # Failed sign-ins allowed per client address in the window (many users may share one).
    login_max_attempts_per_address: int = LOGIN_MAX_ATTEMPTS
    login_window_seconds: int = LOGIN_WINDOW_SECONDS

    @classmethod
    def from_env(cls, env: Env) -> UsersSettings:
        data_dir = Path(env.str("MESH_DATA_DIR", ".mesh"))
        return cls(
            stores=StoreUrls.from_env(env),
            argon2_memory_kib=env.int("MESH_USERS_ARGON2_MEMORY_KIB", 19 * 1024, minimum=19 * 1024),
            argon2_time_cost=env.int("MESH_USERS_ARGON2_TIME_COST", 2, minimum=2),
            hashing_threads=env.int(
                "MESH_USERS_HASHING_THREADS", default_hashing_threads(), minimum=1, maximum=64
            ),
            signing_keys=_signing_keys(env),
            signing_keys_dir=Path(env.str(SIGNING_KEYS_DIR_VAR, str(data_dir / "keys"))).resolve(),
            page_token_secret=_page_token_secret(env),
            refresh_ttl_seconds=env.int(
                "MESH_USERS_REFRESH_TTL_SECONDS",
                REFRESH_TOKEN_DAYS * 24 * 3600,
                minimum=60,
                maximum=365 * 24 * 3600,
            ),
            login_max_attempts=env.int(
                "MESH_USERS_LOGIN_MAX_ATTEMPTS", LOGIN_MAX_ATTEMPTS, minimum=1, maximum=10_000
            ),
            login_max_attempts_per_address=env.int(
                "MESH_USERS_LOGIN_MAX_ATTEMPTS_PER_ADDRESS",
                LOGIN_MAX_ATTEMPTS,
                minimum=1,
                maximum=1_000_000,
            ),
            login_window_seconds=env.int(
                "MESH_USERS_LOGIN_WINDOW_SECONDS", LOGIN_WINDOW_SECONDS, minimum=1, maximum=86_400
            ),
        )


def _signing_keys(env: Env) -> tuple[SigningKey, ...]:
    secret = env.secret(SIGNING_KEYS_VAR)
    if secret is None:
        return ()
    try:
        return tuple(parse_signing_keys(secret.value))
    except ValueError as exc:
        raise SettingsError(SIGNING_KEYS_VAR, str(exc)) from None


def _page_token_secret(env: Env) -> Secret | None:
    secret = env.secret(PAGE_TOKEN_SECRET_VAR)
    if secret is not None and len(secret.value) < PAGE_TOKEN_SECRET_MIN:
        raise SettingsError(
            PAGE_TOKEN_SECRET_VAR, f"must be at least {PAGE_TOKEN_SECRET_MIN} characters long"
        )
    return secret
