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
