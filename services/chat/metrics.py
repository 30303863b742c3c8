"""Chat's Prometheus metrics (on the ops port's /metrics with the shared ones).

Messages in: ``mesh_chat_messages_stored_total`` (sends stored by this replica); messages
out: ``mesh_chat_deliveries_total`` (frames written to this replica's live connections);
between them the fan-out: ``mesh_chat_fanout_messages_total`` (messages this replica got
from the bus, its own included) and ``mesh_chat_fanout_latency_seconds`` (from the publish
on the storing replica to the frame handed to this replica's sockets).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from mesh.metrics import LATENCY_BUCKETS

FANOUT_BUCKETS: Final = LATENCY_BUCKETS[:-1]  # up to 5 s: later is a stuck replica

CONNECTIONS: Final = Gauge("mesh_chat_connections", "Open chat WebSockets.")
ROOMS: Final = Gauge(
    "mesh_chat_rooms", "Rooms with at least one subscriber on this replica (or lingering)."
)
MESSAGES_STORED: Final = Counter(
    "mesh_chat_messages_stored_total", "Messages stored (retries of a stored one excluded)."
)
DELIVERIES: Final = Counter(
    "mesh_chat_deliveries_total", "Message frames written to live connections."
)
FANOUT_MESSAGES: Final = Counter(
    "mesh_chat_fanout_messages_total", "Messages received from the fan-out bus (Redis pub/sub)."
)
FANOUT_LATENCY: Final = Histogram(
    "mesh_chat_fanout_latency_seconds",
    "From a message's publish on the replica that stored it to its frame being written to"
    " this replica's connections.",
    buckets=FANOUT_BUCKETS,
)
SEND_QUEUE_DROPS: Final = Counter(
    "mesh_chat_send_queue_drops_total",
    "Frames refused because a connection's send queue was full (it is then closed with 1013).",
)
SERVER_CLOSES: Final = Counter(
    "mesh_chat_server_closes_total", "Connections the server closed, by close code.", ["code"]
)
SEQS_SKIPPED: Final = Counter(
    "mesh_chat_seqs_skipped_total", "Seqs stepped over after the gap timeout (never stored)."
)
