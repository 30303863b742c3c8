"""Settings of the chat service."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.backing_settings import StoreUrls
from mesh.settings import Env


@dataclass(frozen=True, slots=True)
class ChatSettings:
    stores: StoreUrls
    max_frame_bytes: int
    heartbeat_seconds: float

    @classmethod
    def from_env(cls, env: Env) -> ChatSettings:
        return cls(
            stores=StoreUrls.from_env(env),
            max_frame_bytes=env.int("MESH_CHAT_MAX_FRAME_BYTES", 64 * 1024, minimum=1024),
            heartbeat_seconds=env.float("MESH_CHAT_HEARTBEAT_SECONDS", 25.0, minimum=1.0),
        )
