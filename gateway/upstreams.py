"""The gateway's upstreams: which gRPC services it exposes, and its connections to them.

`GRPC_SERVICES` is the explicit registry: each proto service and the upstream (a name in
`GatewaySettings`) that serves it. `Upstreams` holds the live connections - one
`ChannelPool` per gRPC upstream and one shared aiohttp `ClientSession` for chat - opened and
closed by the app's cleanup context.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Final

import aiohttp
from google.protobuf.message import Message

from gateway.routing import Route, UpstreamService
from gateway.settings import GatewaySettings
from mesh.grpc_client import ChannelPool, PooledUnaryUnary
from protos.analytics.v1 import analytics_pb2
from protos.catalog.v1 import catalog_pb2
from protos.users.v1 import users_pb2

GRPC_SERVICES: Final[tuple[UpstreamService, ...]] = (
    UpstreamService("users", users_pb2.DESCRIPTOR.services_by_name["UsersService"]),
    UpstreamService("catalog", catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"]),
    UpstreamService("analytics", analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"]),
)

CHAT: Final = "chat"


class Upstreams:
    """Open connections to every upstream. Create inside the running event loop."""

    def __init__(self, settings: GatewaySettings, grpc_upstreams: Iterable[str]) -> None:
        self.grpc: Mapping[str, ChannelPool] = {
            name: ChannelPool(settings.grpc_addresses(name), settings.channels_per_upstream)
            for name in dict.fromkeys(grpc_upstreams)
        }
        # One session for every HTTP/WebSocket call to chat. No connection limit: proxied
        # WebSockets are long-lived and their number is bounded by the clients'.
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=settings.upstream_timeout_seconds
            ),
        )
        self.chat_urls = settings.chat_urls
        self._chat_turn = itertools.count()
        self.chat_sockets: dict[str, int] = dict.fromkeys(settings.chat_urls, 0)

    def next_chat_url(self) -> str:
        """A chat base URL, round-robin over the configured replicas."""
        return self.chat_urls[next(self._chat_turn) % len(self.chat_urls)]

    def chat_candidates(self) -> list[str]:
        """Every chat replica, in the order to try them: round-robin, then failover."""
        start = next(self._chat_turn) % len(self.chat_urls)
        return [*self.chat_urls[start:], *self.chat_urls[:start]]

    def chat_socket_candidates(self) -> list[str]:
        """Chat replicas for a new WebSocket: fewest proxied sockets first (ties round-robin).

        Least-connections rather than round-robin keeps replicas even after one restarts:
        its clients reconnect to the others, and new sockets then go to it until it catches
        up. The rest of the list is the failover order.
        """
        candidates = self.chat_candidates()
        return sorted(candidates, key=self.chat_sockets.__getitem__)  # stable: keeps the turn

    def chat_socket_opened(self, url: str) -> None:
        self.chat_sockets[url] += 1

    def chat_socket_closed(self, url: str) -> None:
        self.chat_sockets[url] -= 1

    def unary(self, route: Route) -> PooledUnaryUnary[Message, Message]:
        """The pooled callable for `route`'s method (made once, then cached by the pool)."""
        return self.grpc[route.upstream].unary_unary(
            route.grpc_path,
            request_serializer=route.request_class.SerializeToString,
            response_deserializer=route.response_class.FromString,
        )

    async def close(self) -> None:
        await self.http.close()
        for pool in self.grpc.values():
            await pool.close()
