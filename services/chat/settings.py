"""Settings of the chat service: read once at start, frozen, each one an environment variable."""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.auth.handshake import DEFAULT_ALLOWED_ORIGINS, allowed_origins, normalize_origin
from mesh.backing_settings import StoreUrls
from mesh.settings import Env

KIB = 1024


@dataclass(frozen=True, slots=True)
class ChatSettings:
    stores: StoreUrls
    max_frame_bytes: int = 64 * KIB
    ping_seconds: float = 25.0
    idle_timeout_seconds: float = 60.0
    max_text_chars: int = 4000
    rate_per_second: float = 10.0
    rate_burst: int = 20
    flood_close_after: int = 10
    max_connections_per_user: int = 5
    max_rooms_per_connection: int = 100
    send_buffer_bytes: int = 256 * KIB
    socket_send_buffer_bytes: int = 0  # SO_SNDBUF of each WebSocket; 0: kernel autotuning
    replay_limit: int = 1000
    presence_ttl_seconds: float = 30.0
    typing_interval_seconds: float = 3.0
    gap_timeout_seconds: float = 10.0
    sync_interval_seconds: float = 5.0
    shutdown_batch_size: int = 200
    shutdown_batch_pause_seconds: float = 0.05
    close_timeout_seconds: float = 2.0
    allowed_origins: frozenset[str] = field(
        default_factory=lambda: frozenset(normalize_origin(o) for o in DEFAULT_ALLOWED_ORIGINS)
    )

    @classmethod
    def from_env(cls, env: Env) -> ChatSettings:
        def seconds(name: str, default: float, minimum: float = 0.01) -> float:
            return env.float(f"MESH_CHAT_{name}", default, minimum=minimum, maximum=86400.0)

        return cls(
            stores=StoreUrls.from_env(env),
            max_frame_bytes=env.int(
                "MESH_CHAT_MAX_FRAME_BYTES", 64 * KIB, minimum=1024, maximum=16 * KIB * KIB
            ),
            ping_seconds=seconds("HEARTBEAT_SECONDS", 25.0),
            idle_timeout_seconds=seconds("IDLE_TIMEOUT_SECONDS", 60.0),
            max_text_chars=env.int("MESH_CHAT_MAX_TEXT_CHARS", 4000, minimum=1, maximum=60_000),
            rate_per_second=env.float(
                "MESH_CHAT_RATE_PER_SECOND", 10.0, minimum=0.1, maximum=100_000.0
            ),
            rate_burst=env.int("MESH_CHAT_RATE_BURST", 20, minimum=1),
            flood_close_after=env.int("MESH_CHAT_FLOOD_CLOSE_AFTER", 10, minimum=1),
            max_connections_per_user=env.int("MESH_CHAT_MAX_CONNECTIONS_PER_USER", 5, minimum=1),
            max_rooms_per_connection=env.int("MESH_CHAT_MAX_ROOMS_PER_CONNECTION", 100, minimum=1),
            send_buffer_bytes=env.int("MESH_CHAT_SEND_BUFFER_BYTES", 256 * KIB, minimum=4 * KIB),
            socket_send_buffer_bytes=env.int(
                "MESH_CHAT_SOCKET_SEND_BUFFER_BYTES", 0, minimum=0, maximum=64 * KIB * KIB
            ),
            replay_limit=env.int("MESH_CHAT_REPLAY_LIMIT", 1000, minimum=1, maximum=100_000),
            presence_ttl_seconds=seconds("PRESENCE_TTL_SECONDS", 30.0, minimum=0.3),
            typing_interval_seconds=seconds("TYPING_INTERVAL_SECONDS", 3.0),
            gap_timeout_seconds=seconds("GAP_TIMEOUT_SECONDS", 10.0),
            sync_interval_seconds=seconds("SYNC_INTERVAL_SECONDS", 5.0),
            shutdown_batch_size=env.int("MESH_CHAT_SHUTDOWN_BATCH_SIZE", 200, minimum=1),
            shutdown_batch_pause_seconds=env.float(
                "MESH_CHAT_SHUTDOWN_BATCH_PAUSE_SECONDS", 0.05, minimum=0.0, maximum=10.0
            ),
            close_timeout_seconds=seconds("CLOSE_TIMEOUT_SECONDS", 2.0),
            allowed_origins=allowed_origins(env),
        )
