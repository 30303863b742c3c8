"""Chat's fan-out telemetry: the envelope carries the publish time and the sender's trace
context; each delivery is a span linked to the sender's and a fan-out latency sample; a full
send queue is counted."""

from __future__ import annotations

import time
from typing import Any, cast

from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from prometheus_client import REGISTRY

from services.chat.bus import FanoutBus, message_header, parse_message_header
from services.chat.connection import Connection
from services.chat.hub import RoomHub
from tests.tracing_capture import capture

SENDER = SpanContext(
    0x4BF92F3577B34DA6A3CE929D0E0E4736,
    0x00F067AA0BA902B7,
    is_remote=False,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
)


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_the_header_carries_seq_time_and_context_and_old_headers_still_parse() -> None:
    head = message_header(12, 1_700_000_000_123_456, SENDER)
    assert head == b"m12,1700000000123456,00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    seq, published, link = parse_message_header(head[1:])
    assert (seq, published) == (12, 1_700_000_000_123_456)
    assert link is not None
    assert (link.context.trace_id, link.context.span_id) == (SENDER.trace_id, SENDER.span_id)
    assert link.context.trace_flags.sampled
    assert parse_message_header(b"12") == (12, None, None)  # a replica of the previous version
    assert message_header(3, 5, trace.INVALID_SPAN_CONTEXT) == b"m3,5"


async def test_a_delivery_is_a_span_linked_to_the_sender_and_a_latency_sample() -> None:
    hub = RoomHub("room-1", cast(Any, None), 10.0, 100, lambda _: None)
    published = time.time_ns() // 1000 - 20_000  # 20 ms ago
    envelope = message_header(1, published, SENDER) + b' {"type":"message"}'
    received, latency_sum = (
        sample("mesh_chat_fanout_messages_total"),
        sample("mesh_chat_fanout_latency_seconds_sum"),
    )
    with capture(ratio=0.0) as spans:  # sampled because the sender's trace was
        FanoutBus._deliver(hub, envelope)
    (span,) = spans
    assert (span.name, span.kind, span.parent) == ("chat deliver", SpanKind.CONSUMER, None)
    assert [link.context.span_id for link in span.links] == [SENDER.span_id]
    assert span.attributes is not None
    assert (span.attributes["chat.room"], span.attributes["chat.seq"]) == ("room-1", 1)
    assert sample("mesh_chat_fanout_messages_total") - received == 1
    assert 0.02 <= sample("mesh_chat_fanout_latency_seconds_sum") - latency_sum < 5


class Transport:
    def __init__(self, buffered: int) -> None:
        self.buffered = buffered

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.buffered += len(data)


def test_a_frame_refused_by_a_full_send_queue_is_counted() -> None:
    closes: list[int] = []
    connection = Connection(
        cast(web.WebSocketResponse, None),
        cast(Any, Transport(buffered=2000)),
        "u",
        "c",
        1000,
        20,
        0.0,
        lambda _, code, __: closes.append(code),
    )
    before = sample("mesh_chat_send_queue_drops_total")
    assert not connection.write(b"frame")
    assert closes == [1013]
    assert sample("mesh_chat_send_queue_drops_total") - before == 1
