"""The client address a login is counted against."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from mesh.errors import Unavailable
from mesh.harness import free_port
from services.users.throttle import RedisLoginThrottle, client_address


@pytest.mark.parametrize(
    ("forwarded", "peer", "expected"),
    [
        ("203.0.113.9", "ipv4:127.0.0.1:5000", "203.0.113.9"),
        ("  2001:db8::1 ", "ipv4:127.0.0.1:5000", "2001:db8::1"),
        (None, "ipv4:10.1.2.3:40000", "10.1.2.3"),
        ("", "ipv4:10.1.2.3:40000", "10.1.2.3"),
        (None, "ipv6:[::1]:40000", "::1"),
        (None, "ipv6:%5B2001:db8::2%5D:40000", "2001:db8::2"),
        (None, "unix:/tmp/socket", "/tmp/socket"),
        (None, "", "unknown"),
        ("x" * 500, "ipv4:127.0.0.1:1", "x" * 100),
    ],
)
def test_client_address(forwarded: str | None, peer: str, expected: str) -> None:
    assert client_address(forwarded, peer) == expected


def test_the_port_does_not_split_one_client_into_many() -> None:
    assert client_address(None, "ipv4:10.0.0.1:1") == client_address(None, "ipv4:10.0.0.1:2")


async def test_an_unreachable_redis_fails_closed_as_unavailable() -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)
    try:
        throttle = RedisLoginThrottle(client, "t_", limit=10, window_seconds=900)
        with pytest.raises(Unavailable):
            await throttle.reserve("a@example.org", "203.0.113.1")
        await throttle.succeeded("a@example.org", "203.0.113.1")  # logged, not raised
    finally:
        await client.aclose()
