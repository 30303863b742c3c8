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

Tracing: every call made through `PooledUnaryUnary` is a CLIENT span
``<package.Service>/<Method>`` (child of the current span) whose W3C context travels in the
call's metadata (``traceparent``), so the service's server span continues the caller's
trace. Done here, not with a channel interceptor: grpc.aio interceptors put every call
through an extra task and wrapper, and this is the gateway's hot path. A call made while
instrumentation is suppressed (a health probe) carries no context and makes no span.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
from collections.abc import Callable, Generator, Sequence
from typing import Any, Final, Generic, TypeVar

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind, Status, StatusCode

TRequest = TypeVar("TRequest")
TResponse = TypeVar("TResponse")

ChannelOption = tuple[str, Any]

DEFAULT_OPTIONS: Final[tuple[ChannelOption, ...]] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # A restarted replica is reconnected within 2 s (gRPC's default backoff grows to 120 s,
    # which would fail a circuit breaker's probes long after the upstream is back).
    ("grpc.max_reconnect_backoff_ms", 2_000),
)
_BALANCING: Final[tuple[ChannelOption, ...]] = (
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.use_local_subchannel_pool", 1),
)
_tracer = trace.get_tracer("mesh.grpc")


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
        method: str = "/unknown/unknown",
    ) -> None:
        self._pool = pool
        self._callables = tuple(callables)
        self._span_name = method.lstrip("/")
        service, _, name = self._span_name.partition("/")
        self._attributes = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            "server.address": ",".join(pool.addresses),
        }

    def __call__(
        self,
        request: TRequest,
        *,
        timeout: float | None = None,
        metadata: grpc.aio.MetadataType | None = None,
    ) -> grpc.aio.UnaryUnaryCall[TRequest, TResponse]:
        callable_ = self._callables[self._pool.next_index()]
        if not is_instrumentation_enabled():
            call: grpc.aio.UnaryUnaryCall[TRequest, TResponse] = callable_(
                request, timeout=timeout, metadata=metadata
            )
            return call
        span = _tracer.start_span(
            self._span_name, kind=SpanKind.CLIENT, attributes=self._attributes
        )
        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(span))
        traced_metadata = (*(metadata or ()), *carrier.items())
        try:
            call = callable_(request, timeout=timeout, metadata=traced_metadata)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
            raise
        return TracedUnaryUnaryCall(call, span)


class TracedUnaryUnaryCall(grpc.aio.UnaryUnaryCall[TRequest, TResponse]):
    """A call whose CLIENT span ends, with the call's status, when the call is awaited."""

    __slots__ = ("_call", "_span")

    def __init__(self, call: grpc.aio.UnaryUnaryCall[TRequest, TResponse], span: trace.Span):
        self._call = call
        self._span: trace.Span | None = span

    def _finish(self, code: grpc.StatusCode) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()

    def __await__(self) -> Generator[Any, None, TResponse]:
        try:
            response = yield from self._call.__await__()
        except grpc.RpcError as error:
            self._finish(error.code())
            raise
        except BaseException:
            self._finish(grpc.StatusCode.CANCELLED)
            raise
        self._finish(grpc.StatusCode.OK)
        return response

    # Everything else is the call's own.

    def cancelled(self) -> bool:
        return self._call.cancelled()

    def done(self) -> bool:
        return self._call.done()

    def time_remaining(self) -> float | None:
        return self._call.time_remaining()

    def cancel(self) -> bool:
        return self._call.cancel()

    def add_done_callback(self, callback: grpc.aio.DoneCallbackType) -> None:
        self._call.add_done_callback(callback)

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return await self._call.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        return await self._call.code()

    async def details(self) -> str:
        return await self._call.details()

    async def wait_for_connection(self) -> None:
        await self._call.wait_for_connection()


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
                method,
            )
            self._unary_unary[method] = cached
        return cached

    async def close(self, grace: float | None = None) -> None:
        await asyncio.gather(*(channel.close(grace) for channel in self._channels))
