"""Chat's Prometheus metrics (on the ops port's /metrics with the shared ones)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

CONNECTIONS: Final = Gauge("mesh_chat_connections", "Open chat WebSockets.")
MESSAGES_STORED: Final = Counter(
    "mesh_chat_messages_stored_total", "Messages stored (retries of a stored one excluded)."
)
DELIVERIES: Final = Counter(
    "mesh_chat_deliveries_total", "Message frames written to live connections."
)
SERVER_CLOSES: Final = Counter(
    "mesh_chat_server_closes_total", "Connections the server closed, by close code.", ["code"]
)
SEQS_SKIPPED: Final = Counter(
    "mesh_chat_seqs_skipped_total", "Seqs stepped over after the gap timeout (never stored)."
)
