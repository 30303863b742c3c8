from __future__ import annotations

import logging

import orjson
from opentelemetry.sdk.trace import TracerProvider

from mesh.context import request_id_var
from mesh.logs import JsonFormatter


def render(record: logging.LogRecord) -> dict[str, object]:
    parsed: dict[str, object] = orjson.loads(JsonFormatter("users").format(record))
    return parsed


def make_record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_a_line_carries_trace_span_and_request_ids() -> None:
    tracer = TracerProvider().get_tracer("test")
    token = request_id_var.set("req-1")
    try:
        with tracer.start_as_current_span("op") as span:
            line = render(make_record("hello", order=7))
            context = span.get_span_context()
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "hello"
    assert line["level"] == "warning"
    assert line["service"] == "users"
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert line["request_id"] == "req-1"
    assert line["order"] == 7


def test_outside_a_span_no_ids_are_invented() -> None:
    line = render(make_record("plain"))
    assert "trace_id" not in line
    assert "request_id" not in line


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("gateway"))
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


async def test_a_line_logged_while_serving_a_request_names_its_trace() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from mesh.http_observability import observability_middleware
    from tests.tracing_capture import capture

    logger = logging.getLogger("tests.logs.request")
    handler = Lines()
    logger.addHandler(handler)

    async def noisy(_: web.Request) -> web.Response:
        logger.warning("something to say")
        return web.Response(text="ok")

    app = web.Application(middlewares=[observability_middleware])
    app.router.add_get("/noisy", noisy)
    try:
        with capture(ratio=0.0):  # not sampled: the ids are in the logs all the same
            async with TestClient(TestServer(app)) as client:
                response = await client.get("/noisy")
    finally:
        logger.removeHandler(handler)
    _, trace_id, span_id, _ = response.headers["traceparent"].split("-")
    (line,) = handler.lines
    assert (line["trace_id"], line["span_id"]) == (trace_id, span_id)
