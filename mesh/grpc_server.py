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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pool
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
_tracer = trace.get_tracer("mesh.grpc")

Register = Callable[[grpc.aio.Server], None]
Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Access control, a span and RED metrics per call, and domain errors as rich gRPC statuses.

    Only the methods of `service_names` are wrapped (health and reflection pass through);
    each is checked against its `(mesh.v1.access)` option before the handler runs, and the
    verified caller is put in `caller_var` for the handler.
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
        if handler is None or handler.unary_unary is None or access is None:
            return handler
        _, _, full = handler_call_details.method.partition("/")
        service, _, method = full.partition("/")
        return grpc.unary_unary_rpc_method_handler(
            _wrap(handler.unary_unary, service, method, access, self._verifier),  # type: ignore[arg-type]
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
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
    inner: Handler, service: str, method: str, access: int, verifier: TokenVerifier
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
                caller = await authorize(access, _metadata(context, "authorization"), verifier)
                caller_token = caller_var.set(caller)
                try:
                    return await inner(request, context)
                finally:
                    caller_var.reset(caller_token)
            except ServiceError as exc:
                code = exc.code
                await context.abort_with_status(to_grpc_status(exc))  # type: ignore[attr-defined]
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception as exc:
                code = grpc.StatusCode.INTERNAL
                span.record_exception(exc)
                log.exception("unhandled error in %s/%s", service, method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
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
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
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
