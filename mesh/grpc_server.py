"""The grpc.aio server bootstrap every gRPC service uses.

It adds the standard health service (`grpc.health.v1`) and server reflection, one server
interceptor for tracing, metrics and domain-error mapping, and the stop sequence: readiness
and health go NOT_SERVING first, in-flight calls get the grace period, then the server
closes.

Tracing: each call of a service method is a SERVER span named ``<package.Service>/<Method>``
continuing the caller's W3C trace context from the call's metadata (``traceparent``). Its
status is an error for the codes that signal a server fault (UNKNOWN, DEADLINE_EXCEEDED,
UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS; a call cancelled because its deadline
passed counts as DEADLINE_EXCEEDED), not for a caller's mistake (NOT_FOUND,
INVALID_ARGUMENT...). Health checks and reflection are neither traced nor measured.

Requests are parsed by the interceptor, not by gRPC: every method (health and reflection
too) receives its request bytes, and bytes that are not a valid message of the method's
request type are INVALID_ARGUMENT naming that type. grpc-python's own deserializer would
answer them with UNKNOWN ("Exception deserializing request"), a server fault. A message over
`MAX_MESSAGE_BYTES` is RESOURCE_EXHAUSTED before any of this runs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import grpc
import pymongo.errors
import redis.exceptions
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode

from mesh.auth.access import authorize, method_access
from mesh.auth.identity import caller_var
from mesh.auth.tokens import TokenVerifier
from mesh.common import CommonSettings
from mesh.context import request_id_var
from mesh.errors import ServiceError, to_grpc_status
from mesh.lifecycle import Lifecycle
from mesh.metrics import GRPC_DURATION, GRPC_HANDLED
from mesh.netbind import port_in_use, port_is_free
from mesh.ops import ops_server
from mesh.telemetry import exemplar

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
log = logging.getLogger("mesh.grpc")

SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
# A store's connection lost or refused during a call: nothing is wrong with the request, and
# a write either committed whole or not at all (a retry with its idempotency key replays), so
# the caller gets UNAVAILABLE (503, retryable), not INTERNAL (500).
CONNECTION_LOST: tuple[type[Exception], ...] = (
    ConnectionError,  # reset, refused, aborted, broken pipe
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.PostgresConnectionError,
    redis.exceptions.ConnectionError,
    pymongo.errors.ConnectionFailure,
)


def _connection_lost(exc: BaseException | None) -> bool:
    """Whether `exc`, or what it was raised from or while handling (asyncpg's "connection is
    closed" when a transaction ends on a dead connection), is a lost store connection."""
    for _ in range(8):
        if exc is None:
            return False
        if isinstance(exc, CONNECTION_LOST):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_tracer = trace.get_tracer("mesh.grpc")

Register = Callable[[grpc.aio.Server], None]
Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
Deserializer = Callable[[bytes], Any] | None


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Access control, a span and RED metrics per call, and domain errors as rich gRPC statuses.

    Only the methods of `service_names` are wrapped (health and reflection pass through,
    with only their requests parsed here); each is checked against its `(mesh.v1.access)`
    option before the handler runs, and the verified caller is put in `caller_var` for the
    handler.
    """

    def __init__(self, service_names: Sequence[str], verifier: TokenVerifier) -> None:
        pool = descriptor_pool.Default()
        self._access = {
            f"/{name}/{method.name}": method_access(method)
            for name in service_names
            for method in pool.FindServiceByName(name).methods
        }
        self._verifier = verifier

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        access = self._access.get(handler_call_details.method)
        if handler is None:
            return handler
        if handler.unary_unary is None or access is None:
            return _parsing(handler)
        _, _, full = handler_call_details.method.partition("/")
        service, _, method = full.partition("/")
        return grpc.unary_unary_rpc_method_handler(
            _wrap(
                handler.unary_unary,  # type: ignore[arg-type]
                handler.request_deserializer,
                service,
                method,
                access,
                self._verifier,
            ),
            request_deserializer=None,  # `_wrap` parses: INVALID_ARGUMENT, not UNKNOWN
            response_serializer=handler.response_serializer,
        )


async def _parse(
    deserialize: Deserializer, request: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> Any:
    """The request message from its bytes; aborts the call with INVALID_ARGUMENT if they do
    not parse."""
    if deserialize is None:
        return request
    try:
        return deserialize(request)
    except DecodeError as exc:  # e.g. "Error parsing message with type 'users.v1.LoginRequest'"
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid protobuf message: {exc}"
        )


def _parsing(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` taking its request bytes and parsing them with `_parse` (any of the four
    kinds; a streaming handler may be an async generator or write with ``context.write``)."""
    deserialize = handler.request_deserializer
    if deserialize is None:
        return handler
    serialize = handler.response_serializer

    async def messages(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async for request in requests:
            yield await _parse(deserialize, request, context)

    def calling(inner: Any, *, stream_in: bool) -> Any:
        async def arguments(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if stream_in:
                return messages(request, context)
            return await _parse(deserialize, request, context)

        if inspect.isasyncgenfunction(inner):

            async def generate(request: Any, context: Any) -> AsyncIterator[Any]:
                async for response in inner(await arguments(request, context), context):
                    yield response

            return generate

        async def call(request: Any, context: Any) -> Any:
            return await inner(await arguments(request, context), context)

        return call

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            calling(handler.unary_unary, stream_in=False), response_serializer=serialize
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            calling(handler.unary_stream, stream_in=False), response_serializer=serialize
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            calling(handler.stream_unary, stream_in=True), response_serializer=serialize
        )
    return grpc.stream_stream_rpc_method_handler(
        calling(handler.stream_stream, stream_in=True), response_serializer=serialize
    )


def _metadata(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return None


def _carrier(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    """The call's text metadata, for the trace context propagator."""
    return {
        name: value for name, value in context.invocation_metadata() or () if isinstance(value, str)
    }


def _wrap(
    inner: Handler,
    deserialize: Deserializer,
    service: str,
    method: str,
    access: int,
    verifier: TokenVerifier,
) -> Handler:
    duration = GRPC_DURATION.labels(service, method)
    span_name = f"{service}/{method}"
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        request_id = request_id_var.set(_metadata(context, "x-request-id"))
        with _tracer.start_as_current_span(
            span_name,
            context=extract(_carrier(context)),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                failure: grpc.Status | tuple[grpc.StatusCode, str] | None = None
                try:
                    request = await _parse(deserialize, request, context)  # before access
                    caller = await authorize(access, _metadata(context, "authorization"), verifier)
                    caller_token = caller_var.set(caller)
                    try:
                        return await inner(request, context)
                    finally:
                        caller_var.reset(caller_token)
                except ServiceError as exc:
                    code = exc.code
                    failure = to_grpc_status(exc)
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except Exception as exc:
                    span.record_exception(exc)
                    if _connection_lost(exc):
                        code = grpc.StatusCode.UNAVAILABLE
                        log.warning(
                            "a store connection failed in %s/%s", service, method, exc_info=True
                        )
                        failure = (code, "a store is unavailable: retry")
                    else:
                        code = grpc.StatusCode.INTERNAL
                        log.exception("unhandled error in %s/%s", service, method)
                        failure = (code, "internal error")
                # Abort after the except blocks, the request dropped: grpc keeps the abort's
                # exception, and through its traceback this frame, in a reference cycle that
                # lives until a full garbage collection. Raised inside an except block it
                # would chain the handler's exception and every frame of it, request
                # included: hostile 1 MB bodies then piled up by the hundred megabytes.
                request = None
                if isinstance(failure, tuple):
                    await context.abort(*failure)
                await context.abort_with_status(failure)  # type: ignore[attr-defined]
            finally:
                request_id_var.reset(request_id)
                fault = _trace_outcome(span, code, context)
                elapsed = time.perf_counter() - started
                duration.observe(elapsed, exemplar(span, error=fault))
                GRPC_HANDLED.labels(service, method, code.name).inc()

    return handle


def _trace_outcome(
    span: trace.Span, code: grpc.StatusCode, context: grpc.aio.ServicerContext[Any, Any]
) -> bool:
    """Record the call's outcome on its span; True when it was a server fault."""
    if code is grpc.StatusCode.CANCELLED:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            code = grpc.StatusCode.DEADLINE_EXCEEDED  # the caller's deadline, not a hang-up
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, code.name))
        return True
    return False


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc,name-defined]
    """The reference grpc.health.v1 servicer, with ``List`` too (it leaves it UNIMPLEMENTED)."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
        )


async def serve_grpc(
    settings: CommonSettings,
    lifecycle: Lifecycle,
    register: Register,
    service_names: Sequence[str],
    *,
    verifier: TokenVerifier,
) -> None:
    """Serve until a stop is requested, then stop gracefully. Returns when stopped."""
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(service_names, verifier)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    register(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    address = f"{settings.host}:{settings.port}"
    if not port_is_free(settings.host, settings.port):  # before gRPC core logs its own error
        raise port_in_use(settings.port_var, settings.host, settings.port)
    try:
        server.add_insecure_port(address)
    except RuntimeError:
        raise port_in_use(settings.port_var, settings.host, settings.port) from None

    async with ops_server(settings, lifecycle):
        await server.start()
        for name in ("", *service_names):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        lifecycle.mark_ready()
        log.info("serving gRPC on %s", address, extra={"ops_port": settings.ops_port})
        await lifecycle.wait_for_stop()
        await health_servicer.enter_graceful_shutdown()
        await server.stop(settings.grace_seconds)
        log.info("gRPC server stopped")
