"""Composition root of the users service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mesh.auth.keys import SigningKey, public_jwk
from mesh.auth.tokens import TokenIssuer, TokenSettings, TokenVerifier
from mesh.backing_settings import POSTGRES_VAR, REDIS_VAR
from mesh.common import CommonSettings
from mesh.grpc_server import serve_grpc
from mesh.lifecycle import Lifecycle
from mesh.outbox import Outbox, OutboxRelay, events_stream
from mesh.stores import postgres_pool, postgres_ready, redis_client, redis_ready
from protos.users.v1 import users_pb2, users_pb2_grpc
from services.users.api import UsersApi
from services.users.page_tokens import PageTokens
from services.users.passwords import Passwords
from services.users.refresh_store import PostgresRefreshStore
from services.users.service import UsersService
from services.users.sessions import SessionService
from services.users.settings import SIGNING_KEYS_DIR_VAR, UsersSettings
from services.users.signing import derive_page_token_key, resolve_signing_keys
from services.users.store import OUTBOX_TABLE, PostgresUserStore
from services.users.throttle import RedisLoginThrottle

SERVICE_NAME = users_pb2.DESCRIPTOR.services_by_name["UsersService"].full_name


def own_verifier(keys: Sequence[SigningKey], settings: TokenSettings) -> TokenVerifier:
    """Verifies access tokens against this process's own keys (no network round trip)."""
    jwks = [public_jwk(k) for k in keys]

    async def fetch() -> list[dict[str, Any]]:
        return jwks

    return TokenVerifier(fetch, settings)


async def serve(common: CommonSettings, settings: UsersSettings, lifecycle: Lifecycle) -> None:
    keys = resolve_signing_keys(
        settings.signing_keys, settings.signing_keys_dir, SIGNING_KEYS_DIR_VAR
    )
    secret = settings.page_token_secret
    page_tokens = PageTokens(derive_page_token_key(secret.value if secret else None, keys[-1]))
    passwords = Passwords(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        threads=settings.hashing_threads,
    )
    stores = settings.stores
    try:
        async with (
            postgres_pool(stores.postgres_for("users"), POSTGRES_VAR) as pool,
            redis_client(stores.redis_url, REDIS_VAR) as redis,
        ):
            lifecycle.add_readiness_check("postgres", lambda: postgres_ready(pool))
            lifecycle.add_readiness_check("redis", lambda: redis_ready(redis))
            outbox = Outbox(OUTBOX_TABLE)
            users = PostgresUserStore(pool, outbox)
            relay = OutboxRelay(
                pool,
                redis,
                stream=events_stream(stores.namespace),
                source="users",
                outbox=outbox,
            )
            sessions = SessionService(
                users,
                PostgresRefreshStore(pool),
                passwords,
                TokenIssuer(keys, common.tokens),
                RedisLoginThrottle(
                    redis,
                    stores.namespace,
                    limit=settings.login_max_attempts,
                    address_limit=settings.login_max_attempts_per_address,
                    window_seconds=settings.login_window_seconds,
                ),
                access_ttl_seconds=common.tokens.ttl_seconds,
                refresh_ttl_seconds=settings.refresh_ttl_seconds,
            )
            api = UsersApi(UsersService(users, passwords, page_tokens), sessions, keys)
            async with relay.running():
                await serve_grpc(
                    common,
                    lifecycle,
                    lambda server: users_pb2_grpc.add_UsersServiceServicer_to_server(api, server),
                    [SERVICE_NAME],
                    verifier=own_verifier(keys, common.tokens),
                )
    finally:
        passwords.close()
