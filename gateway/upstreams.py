"""The gateway's upstreams: which gRPC services it exposes, its connections, its call policy.

`GRPC_SERVICES` is the explicit registry: each proto service and the upstream (a name in
`GatewaySettings`) that serves it. `Upstreams` holds the live connections - one
`ChannelPool` per gRPC upstream and one shared aiohttp `ClientSession` for chat - opened and
closed by the app's cleanup context.

`Upstreams.call` makes one unary call for a route under the upstream's traffic policy:

1. the request's `Deadline` bounds every attempt (``timeout=`` the time left, which gRPC
   sends on as ``grpc-timeout``); none left, or DEADLINE_EXCEEDED: a 504 problem;
2. the upstream's `UpstreamBreaker` admits each attempt or answers a 503 problem with
   ``Retry-After`` at once, without touching the upstream; each attempt's status is its
   verdict, except DEADLINE_EXCEEDED under a deadline the client shortened (its own
   ``grpc-timeout``/``Request-Timeout`` says nothing of the upstream's health, and would
   let one client trip the breaker for all);
3. an idempotent call that got UNAVAILABLE is retried (`gateway.retry`) after a jittered
   backoff, while the deadline and the upstream's `RetryBudget` allow.

A client that goes away cancels the handler, which cancels the gRPC call in flight (grpc.aio
does so when the awaiting task is cancelled); that attempt counts for nothing.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
import grpc
import grpc.aio
from aiohttp import hdrs
from google.protobuf.message import Message

from gateway.breaker import BreakerOpen, UpstreamBreaker, Verdict
from gateway.deadline import Deadline
from gateway.metrics import (
    BREAKER_REJECTIONS,
    RETRY_BUDGET_EXHAUSTED,
    UPSTREAM_DEADLINE_EXCEEDED,
    UPSTREAM_RETRIES,
)
from gateway.retry import RetryBudget, backoff_seconds, is_idempotent
from gateway.routing import Route, UpstreamService
from gateway.settings import GatewaySettings, RetrySettings
from mesh.grpc_client import ChannelPool, PooledUnaryUnary
from mesh.problem import ProblemError
from protos.analytics.v1 import analytics_pb2
from protos.catalog.v1 import catalog_pb2
from protos.users.v1 import users_pb2

GRPC_SERVICES: Final[tuple[UpstreamService, ...]] = (
    UpstreamService("users", users_pb2.DESCRIPTOR.services_by_name["UsersService"]),
    UpstreamService("catalog", catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"]),
    UpstreamService("analytics", analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"]),
)

CHAT: Final = "chat"
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful unary call's response and metadata."""

    message: Message
    initial_metadata: grpc.aio.Metadata
    trailing_metadata: grpc.aio.Metadata


def breaker_open_problem(refusal: BreakerOpen) -> ProblemError:
    """The 503 for a call an upstream's open breaker refused, with ``Retry-After``."""
    BREAKER_REJECTIONS.labels(refusal.upstream).inc()
    return ProblemError(
        503,
        f"The upstream service '{refusal.upstream}' is unavailable (circuit breaker open).",
        headers={hdrs.RETRY_AFTER: str(refusal.retry_after)},
        extensions={"upstream": refusal.upstream},
    )


class _Policy:
    """One gRPC upstream's breaker, retry budget and metric series."""

    def __init__(self, name: str, settings: GatewaySettings) -> None:
        self.name = name
        self.breaker = (
            UpstreamBreaker(name, settings.breakers) if settings.breakers.enabled else None
        )
        retries = settings.retries
        self.budget = (
            RetryBudget(retries.budget_ratio, retries.budget_window_seconds)
            if retries.enabled and retries.max_retries > 0
            else None
        )
        self.retries = UPSTREAM_RETRIES.labels(name)
        self.budget_exhausted = RETRY_BUDGET_EXHAUSTED.labels(name)
        self.deadline_exceeded = UPSTREAM_DEADLINE_EXCEEDED.labels(name)

    def deadline_problem(self, deadline: Deadline) -> ProblemError:
        self.deadline_exceeded.inc()
        return ProblemError(
            504,
            f"The upstream service '{self.name}' did not answer in time "
            f"(deadline {deadline.timeout_seconds:g} s).",
            extensions={"upstream": self.name},
        )


class Upstreams:
    """Open connections to every upstream. Create inside the running event loop."""

    def __init__(self, settings: GatewaySettings, grpc_upstreams: Iterable[str]) -> None:
        self.grpc: Mapping[str, ChannelPool] = {
            name: ChannelPool(settings.grpc_addresses(name), settings.channels_per_upstream)
            for name in dict.fromkeys(grpc_upstreams)
        }
        self._policies = {name: _Policy(name, settings) for name in self.grpc}
        # Chat's REST proxy (gateway/http_proxy.py) has a breaker too: connection errors,
        # timeouts and 5xx answers count as failures.
        self.chat_breaker = (
            UpstreamBreaker(CHAT, settings.breakers) if settings.breakers.enabled else None
        )
        self._retry: RetrySettings = settings.retries
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

    def breaker(self, upstream: str) -> UpstreamBreaker | None:
        """The circuit breaker of the gRPC upstream `upstream` (None when breakers are off)."""
        return self._policies[upstream].breaker

    def chat_verdict(self) -> Verdict:
        """Admit one request to chat through its breaker; a 503 problem when it is open."""
        breaker = self.chat_breaker
        if breaker is None:
            return Verdict(None)
        try:
            return Verdict(breaker, breaker.admit())
        except BreakerOpen as refusal:
            raise breaker_open_problem(refusal) from None

    async def call(
        self, route: Route, message: Message, metadata: Metadata, deadline: Deadline
    ) -> Reply:
        """`route`'s method called with `message` under the upstream's policy (see the module
        docstring). Raises a `ProblemError` (503 breaker open, 504 deadline) or the last
        attempt's `grpc.aio.AioRpcError`."""
        policy = self._policies[route.upstream]
        breaker, budget = policy.breaker, policy.budget
        if budget is not None:
            budget.request()
        stub = self.unary(route)
        retry = 0
        while True:
            remaining = deadline.remaining()
            if remaining <= 0.0:
                raise policy.deadline_problem(deadline)
            try:
                ticket = breaker.admit() if breaker is not None else 0
            except BreakerOpen as refusal:
                raise breaker_open_problem(refusal) from None
            try:
                call = stub(message, timeout=remaining, metadata=metadata)
                response = await call
                initial_metadata = await call.initial_metadata()
                trailing_metadata = await call.trailing_metadata()
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if breaker is not None:
                    if code is grpc.StatusCode.DEADLINE_EXCEEDED and deadline.set_by_client:
                        breaker.release(ticket)  # the client's own short deadline: no verdict
                    else:
                        breaker.record(ticket, code)
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise policy.deadline_problem(deadline) from None
                pause = self._retry_pause(policy, route, deadline, retry, code)
                if pause is None:
                    raise
            except BaseException:  # the client went away (CancelledError), or a local fault
                if breaker is not None:
                    breaker.release(ticket)
                raise
            else:
                if breaker is not None:
                    breaker.record_success(ticket)
                return Reply(response, initial_metadata, trailing_metadata)
            retry += 1
            await asyncio.sleep(pause)

    def _retry_pause(
        self, policy: _Policy, route: Route, deadline: Deadline, retry: int, code: grpc.StatusCode
    ) -> float | None:
        """The backoff before retrying a call that failed with `code`, or None: no retry."""
        settings = self._retry
        if (
            code is not grpc.StatusCode.UNAVAILABLE
            or policy.budget is None
            or retry >= settings.max_retries
            or not is_idempotent(route.http_method, route.method)
        ):
            return None
        pause = backoff_seconds(retry, settings.backoff_base_seconds, settings.backoff_max_seconds)
        if pause >= deadline.remaining():
            return None  # the retry could not start before the deadline
        if not policy.budget.try_spend():
            policy.budget_exhausted.inc()
            return None
        policy.retries.inc()
        return pause

    async def close(self) -> None:
        await self.http.close()
        for pool in self.grpc.values():
            await pool.close()
