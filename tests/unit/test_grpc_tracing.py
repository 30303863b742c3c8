"""Calls through mesh.grpc_client's pool are CLIENT spans whose context the server receives
in the call's metadata (against a real grpc.aio server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, StatusCode

from mesh.grpc_client import ChannelPool
from tests.tracing_capture import capture, tracer

Seen = list[dict[str, str]]


@pytest.fixture
async def echo() -> AsyncIterator[tuple[ChannelPool, Seen]]:
    seen: Seen = []

    async def say(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        seen.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        if request == b"missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.v1.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    pool = ChannelPool([f"127.0.0.1:{port}"], size=2)
    try:
        yield pool, seen
    finally:
        await pool.close()
        await server.stop(None)


def identity(value: bytes) -> bytes:
    return value


async def test_a_call_is_a_client_span_whose_context_reaches_the_server(
    echo: tuple[ChannelPool, Seen],
) -> None:
    pool, seen = echo
    say = pool.unary_unary("/test.v1.Echo/Say", identity, identity)
    with capture(ratio=1.0) as spans:
        with tracer().start_as_current_span("request", kind=SpanKind.SERVER) as parent:
            call = say(b"hi", metadata=(("x-request-id", "r1"),), timeout=5)
            assert await call == b"hi"
            assert (await call.initial_metadata()) is not None  # the call is still a call
        with (
            tracer().start_as_current_span("request", kind=SpanKind.SERVER),
            pytest.raises(grpc.aio.AioRpcError),
        ):
            await say(b"missing", timeout=5)
    client, _, failed, _ = spans
    assert (client.name, client.kind) == ("test.v1.Echo/Say", SpanKind.CLIENT)
    assert client.parent is not None
    assert client.parent.span_id == parent.get_span_context().span_id
    assert client.attributes is not None
    assert client.attributes["rpc.service"] == "test.v1.Echo"
    assert client.attributes["rpc.grpc.status_code"] == 0
    context = client.get_span_context()
    assert context is not None
    flags = int(context.trace_flags)
    assert (
        seen[0]["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    )
    assert flags & 1  # sampled
    assert seen[0]["x-request-id"] == "r1"  # the caller's own metadata is kept
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


async def test_a_suppressed_call_carries_no_context_and_makes_no_span(
    echo: tuple[ChannelPool, Seen],
) -> None:
    pool, seen = echo
    say = pool.unary_unary("/test.v1.Echo/Say", identity, identity)
    with capture(ratio=1.0) as spans, suppress_instrumentation():
        assert await say(b"probe", timeout=5) == b"probe"
    assert spans == []
    assert "traceparent" not in seen[-1]
