"""Composition root of the chat service."""

from __future__ import annotations

from mesh.auth.remote import remote_verifier
from mesh.backing_settings import MONGO_VAR, REDIS_VAR
from mesh.common import CommonSettings
from mesh.lifecycle import Lifecycle
from mesh.stores import mongo_client, mongo_ready, redis_client, redis_ready
from mesh.web import serve_http
from services.chat.app import create_app
from services.chat.runtime import ChatRuntime
from services.chat.settings import ChatSettings
from services.chat.store import ChatStore

DATABASE = "chat"


async def serve(common: CommonSettings, settings: ChatSettings, lifecycle: Lifecycle) -> None:
    async with (
        mongo_client(settings.stores.mongo_url, MONGO_VAR) as mongo,
        redis_client(settings.stores.redis_url, REDIS_VAR) as redis,
        remote_verifier(common.users_addresses, common.tokens) as verifier,
    ):
        store = ChatStore(mongo[settings.stores.database_name(DATABASE)])
        runtime = ChatRuntime(settings, store, redis, verifier, common.instance_id)

        async def fanout_ready() -> bool:
            return runtime.bus.healthy

        lifecycle.add_readiness_check("mongo", lambda: mongo_ready(mongo))
        lifecycle.add_readiness_check("redis", lambda: redis_ready(redis))
        lifecycle.add_readiness_check("fanout", fanout_ready)
        await serve_http(common, lifecycle, create_app(runtime, lifecycle))
