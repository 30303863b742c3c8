"""A pool of grpc.aio channels to one upstream, for calls spread over connections and replicas.

One HTTP/2 connection caps concurrency (max concurrent streams, one TCP window, one
completion queue poller), so a busy client keeps `size` channels and picks them round-robin.
Each channel reaches *every* replica of the upstream: the addresses become one static target
(``ipv4:10.0.0.1:50051,10.0.0.2:50051``) balanced by the ``round_robin`` policy, and
``grpc.use_local_subchannel_pool`` gives every channel its own subchannels (the global pool
would collapse them onto the same connections).

Targets: IPv4 (or IPv6) literals form one static list; a single host name becomes
``dns:///host:port`` (its A records are balanced, as with a Kubernetes headless service);
several host names cannot share one target, so the channels take them in turn (the pool
grows to at least one channel per address).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, TypeVar

import grpc
import grpc.aio

TRequest = TypeVar("TRequest")
TResponse = TypeVar("TResponse")

ChannelOption = tuple[str, Any]

DEFAULT_OPTIONS: Final[tuple[ChannelOption, ...]] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
)
_BALANCING: Final[tuple[ChannelOption, ...]] = (
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.use_local_subchannel_pool", 1),
)


def _ip_version(address: str) -> int | None:
    host = address.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def channel_targets(addresses: Sequence[str]) -> tuple[str, ...]:
    """The gRPC target string(s) that reach all of `addresses` (see the module docstring)."""
    if not addresses:
        raise ValueError("a channel pool needs at least one address")
    versions = {_ip_version(a) for a in addresses}
    if versions == {4}:
        return ("ipv4:" + ",".join(addresses),)
    if versions == {6}:
        return ("ipv6:" + ",".join(addresses),)
    if len(addresses) == 1:
        return (f"dns:///{addresses[0]}",)
    return tuple(f"dns:///{a}" for a in addresses)


class PooledUnaryUnary(Generic[TRequest, TResponse]):
    """One unary-unary method bound once to every channel of a pool, called round-robin."""

    def __init__(
        self,
        pool: ChannelPool,
        callables: Sequence[grpc.aio.UnaryUnaryMultiCallable[TRequest, TResponse]],
    ) -> None:
        self._pool = pool
        self._callables = tuple(callables)

    def __call__(
        self,
        request: TRequest,
        *,
        timeout: float | None = None,
        metadata: grpc.aio.MetadataType | None = None,
    ) -> grpc.aio.UnaryUnaryCall[TRequest, TResponse]:
        callable_ = self._callables[self._pool.next_index()]
        call: grpc.aio.UnaryUnaryCall[TRequest, TResponse] = callable_(
            request, timeout=timeout, metadata=metadata
        )
        return call


class ChannelPool:
    """`size` channels to the replicas at `addresses`; `next()` hands them out round-robin."""

    def __init__(
        self,
        addresses: Sequence[str],
        size: int,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        options: Sequence[ChannelOption] = DEFAULT_OPTIONS,
    ) -> None:
        if size < 1:
            raise ValueError("a channel pool needs at least one channel")
        self.addresses = tuple(addresses)
        self.targets = channel_targets(self.addresses)
        channel_options = [*options, *_BALANCING]
        count = max(size, len(self.targets))
        self._channels = tuple(
            grpc.aio.insecure_channel(
                self.targets[i % len(self.targets)],
                options=channel_options,
                interceptors=list(interceptors) or None,
            )
            for i in range(count)
        )
        self._counter = itertools.count()
        self._unary_unary: dict[str, PooledUnaryUnary[Any, Any]] = {}

    @property
    def channels(self) -> tuple[grpc.aio.Channel, ...]:
        return self._channels

    def next_index(self) -> int:
        return next(self._counter) % len(self._channels)

    def next(self) -> grpc.aio.Channel:
        """The next channel, round-robin."""
        return self._channels[self.next_index()]

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[TRequest], bytes],
        response_deserializer: Callable[[bytes], TResponse],
    ) -> PooledUnaryUnary[TRequest, TResponse]:
        """A cached callable for `method` ("/pkg.Service/Method") over every channel.

        The multicallables are made once per (channel, method): creating one per call costs
        a C-level allocation and a method-name copy on the hot path.
        """
        cached = self._unary_unary.get(method)
        if cached is None:
            cached = PooledUnaryUnary(
                self,
                [
                    channel.unary_unary(
                        method,
                        request_serializer=request_serializer,
                        response_deserializer=response_deserializer,
                    )
                    for channel in self._channels
                ],
            )
            self._unary_unary[method] = cached
        return cached

    async def close(self, grace: float | None = None) -> None:
        await asyncio.gather(*(channel.close(grace) for channel in self._channels))
