"""A connection's token bucket and its bounded send queue."""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web

from services.chat.connection import Connection


class FakeTransport:
    def __init__(self) -> None:
        self.buffered = 0
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.written.append(data)


def connection(transport: FakeTransport, closes: list[int]) -> Connection:
    def closer(_: Connection, code: int, reason: str) -> None:
        closes.append(code)

    return Connection(
        cast(web.WebSocketResponse, None), cast(Any, transport), "u", "c", 1000, 20, 0.0, closer
    )


def test_ten_per_second_with_a_burst_of_twenty() -> None:
    c = connection(FakeTransport(), [])
    assert all(c.allow(0.0, 10.0, 20) for _ in range(20))
    assert not c.allow(0.0, 10.0, 20)
    assert c.allow(0.1, 10.0, 20)  # one token back after 100 ms
    assert not c.allow(0.1, 10.0, 20)
    c.strikes = 3
    assert c.allow(10.0, 10.0, 20)  # quiet long enough to refill: strikes forgiven
    assert c.strikes == 0


def test_a_full_send_queue_closes_with_1013_instead_of_buffering() -> None:
    transport, closes = FakeTransport(), []
    c = connection(transport, closes)
    assert c.write(b"a")
    transport.buffered = 1001
    assert not c.write(b"b")
    assert closes == [1013]
    assert transport.written == [b"a"]
