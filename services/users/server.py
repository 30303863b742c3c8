"""Composition root of the users service."""

from __future__ import annotations

from mesh.backing_settings import POSTGRES_VAR
from mesh.common import CommonSettings
from mesh.grpc_server import serve_grpc
from mesh.lifecycle import Lifecycle
from mesh.stores import postgres_pool, postgres_ready
from protos.users.v1 import users_pb2, users_pb2_grpc
from services.users.api import UsersApi
from services.users.passwords import Passwords
from services.users.service import UsersService
from services.users.settings import UsersSettings
from services.users.store import PostgresUserStore

SERVICE_NAME = users_pb2.DESCRIPTOR.services_by_name["UsersService"].full_name


async def serve(common: CommonSettings, settings: UsersSettings, lifecycle: Lifecycle) -> None:
    passwords = Passwords(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        threads=settings.hashing_threads,
    )
    dsn = settings.stores.postgres_for("users")
    try:
        async with postgres_pool(dsn, POSTGRES_VAR) as pool:
            lifecycle.add_readiness_check("postgres", lambda: postgres_ready(pool))
            api = UsersApi(UsersService(PostgresUserStore(pool), passwords))
            await serve_grpc(
                common,
                lifecycle,
                lambda server: users_pb2_grpc.add_UsersServiceServicer_to_server(api, server),
                [SERVICE_NAME],
            )
    finally:
        passwords.close()
