"""mesh.grpc_client.ChannelPool: targets, round-robin, cached callables."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mesh.grpc_client import ChannelPool, channel_targets


@pytest.mark.parametrize(
    ("addresses", "targets"),
    [
        (["127.0.0.1:1"], ("ipv4:127.0.0.1:1",)),
        (["10.0.0.1:1", "10.0.0.2:2"], ("ipv4:10.0.0.1:1,10.0.0.2:2",)),
        (["[::1]:1", "[::2]:2"], ("ipv6:[::1]:1,[::2]:2",)),
        (["users:50051"], ("dns:///users:50051",)),
        (["a:1", "b:2"], ("dns:///a:1", "dns:///b:2")),
        (["a:1", "10.0.0.1:2"], ("dns:///a:1", "dns:///10.0.0.1:2")),
    ],
)
def test_targets(addresses: list[str], targets: tuple[str, ...]) -> None:
    assert channel_targets(addresses) == targets


def test_no_address_is_an_error() -> None:
    with pytest.raises(ValueError, match="address"):
        channel_targets([])


async def test_round_robin_and_cached_callables() -> None:
    pool = ChannelPool(["127.0.0.1:1"], size=3)
    try:
        assert len(pool.channels) == 3
        assert [pool.next() for _ in range(6)] == [*pool.channels, *pool.channels]
        first = pool.unary_unary("/a.B/C", bytes, bytes)
        assert pool.unary_unary("/a.B/C", bytes, bytes) is first
        assert pool.unary_unary("/a.B/D", bytes, bytes) is not first
    finally:
        await pool.close()


async def test_one_channel_per_host_name_at_least() -> None:
    pool = ChannelPool(["a:1", "b:1", "c:1"], size=2)
    try:
        assert len(pool.channels) == 3
    finally:
        await pool.close()


async def test_calls_reach_every_replica() -> None:
    servers, addresses, servicers = [], [], []
    for _ in range(2):
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        await server.start()
        servers.append(server)
        servicers.append(servicer)
    await servicers[0].set("", health_pb2.HealthCheckResponse.SERVING)
    await servicers[1].set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    pool = ChannelPool(addresses, size=1)
    check = pool.unary_unary(
        "/grpc.health.v1.Health/Check",
        health_pb2.HealthCheckRequest.SerializeToString,
        health_pb2.HealthCheckResponse.FromString,
    )
    try:
        seen = set()
        for _ in range(20):
            response = await check(health_pb2.HealthCheckRequest(), timeout=5)
            seen.add(response.status)
        # round_robin over both replicas: both answers are seen
        statuses = health_pb2.HealthCheckResponse
        assert seen == {statuses.SERVING, statuses.NOT_SERVING}
    finally:
        await pool.close()
        for server in servers:
            await server.stop(None)
