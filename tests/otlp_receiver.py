"""A real OTLP/gRPC trace receiver: the collector's ``TraceService/Export``, in process.

It serves from its own threads (a blocking test or event loop never delays an export).
Tests point ``OTEL_EXPORTER_OTLP_ENDPOINT`` of real processes at it and read what arrived::

    with otlp_receiver() as receiver:
        ... start processes with OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint ...
        spans = await receiver.wait_for(lambda r: r.trace(trace_id) or None)

Run on its own it prints every trace it receives as a tree (for `make run` by hand), or only
counts spans (for benchmarks)::

    python -m tests.otlp_receiver --port 4317 [--quiet]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

T = TypeVar("T")

KINDS = {
    trace_pb2.Span.SPAN_KIND_INTERNAL: "INTERNAL",
    trace_pb2.Span.SPAN_KIND_SERVER: "SERVER",
    trace_pb2.Span.SPAN_KIND_CLIENT: "CLIENT",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "PRODUCER",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
STATUSES = {
    trace_pb2.Status.STATUS_CODE_UNSET: "UNSET",
    trace_pb2.Status.STATUS_CODE_OK: "OK",
    trace_pb2.Status.STATUS_CODE_ERROR: "ERROR",
}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass(frozen=True)
class ReceivedSpan:
    resource: dict[str, Any]
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    name: str
    kind: str
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id)
    status: str
    flags: int
    start_ns: int
    end_ns: int

    @property
    def service(self) -> str:
        return str(self.resource.get("service.name", "?"))

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def _spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    received = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                received.append(
                    ReceivedSpan(
                        resource=resource,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=KINDS.get(span.kind, "UNSPECIFIED"),
                        attributes=_attributes(span.attributes),
                        links=tuple((ln.trace_id.hex(), ln.span_id.hex()) for ln in span.links),
                        status=STATUSES.get(span.status.code, "UNSET"),
                        flags=span.flags,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                    )
                )
    return received


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span exported to it (or only counts them, with `keep=False`)."""

    def __init__(self, keep: bool = True) -> None:
        self._spans: list[ReceivedSpan] = []
        self.count = 0
        self.requests = 0
        self.endpoint = ""
        self._keep = keep
        self._lock = threading.Lock()
        self.on_spans: Callable[[list[ReceivedSpan]], None] | None = None

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        if self._keep:
            spans = _spans(request)
            with self._lock:
                self.requests += 1
                self.count += len(spans)
                self._spans.extend(spans)
            if self.on_spans is not None:
                self.on_spans(spans)
        else:
            count = sum(len(s.spans) for rs in request.resource_spans for s in rs.scope_spans)
            with self._lock:
                self.requests += 1
                self.count += count
        return trace_service_pb2.ExportTraceServiceResponse()

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]

    def describe(self, limit: int = 20) -> str:
        """The last `limit` traces received, as trees (for failure messages)."""
        trace_ids = list(dict.fromkeys(s.trace_id for s in self.spans))[-limit:]
        return "\n".join(render_tree(self.trace(t)) for t in trace_ids)

    def named(self, name: str, service: str | None = None) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name and service in (None, s.service)]

    async def wait_for(self, check: Callable[[OtlpReceiver], T | None], timeout: float = 20) -> T:
        """The first truthy `check(self)`, checked again as time passes; AssertionError
        after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = check(self)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not received within {timeout} s; got {self.count} spans:\n{self.describe()}"
                )
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def otlp_receiver(
    host: str = "127.0.0.1", port: int = 0, *, keep: bool = True
) -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver(keep)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    receiver.endpoint = f"http://{host}:{bound}"
    server.start()
    try:
        yield receiver
    finally:
        server.stop(None)


def render_tree(spans: Sequence[ReceivedSpan]) -> str:
    """One trace as an indented tree: service, kind, name, duration, status, links."""
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[ReceivedSpan]] = defaultdict(list)
    roots = []
    for span in sorted(spans, key=lambda s: s.start_ns):
        if span.parent_span_id and span.parent_span_id in by_id:
            children[span.parent_span_id].append(span)
        else:
            roots.append(span)
    lines: list[str] = []

    def walk(span: ReceivedSpan, depth: int) -> None:
        parent = (
            f" (parent {span.parent_span_id} not here)"
            if span.parent_span_id and (span.parent_span_id not in by_id)
            else ""
        )
        links = "".join(f" -> link {t[:8]}…/{s}" for t, s in span.links)
        status = " ERROR" if span.status == "ERROR" else ""
        lines.append(
            f"{'  ' * depth}{span.service:<9} {span.kind:<8} {span.name}"
            f"  [{span.duration_ms:.2f} ms, span {span.span_id}]{status}{links}{parent}"
        )
        for child in children[span.span_id]:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    trace_id = spans[0].trace_id if spans else "-"
    return f"trace {trace_id}\n" + "\n".join(lines)


def _serve(port: int, quiet: bool, settle_seconds: float) -> None:
    with otlp_receiver("127.0.0.1", port, keep=not quiet) as receiver:
        print(f"OTLP receiver on {receiver.endpoint}", flush=True)
        if quiet:
            while True:
                time.sleep(5)
                print(f"{receiver.count} spans in {receiver.requests} exports", flush=True)
        pending: dict[str, float] = {}
        receiver.on_spans = lambda spans: pending.update(
            {s.trace_id: time.monotonic() for s in spans}
        )
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            for trace_id, last in list(pending.items()):
                if now - last >= settle_seconds:  # no new span for a while: print it
                    del pending[trace_id]
                    print(render_tree(receiver.trace(trace_id)) + "\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=4317)
    parser.add_argument("--quiet", action="store_true", help="only count spans")
    parser.add_argument("--settle-seconds", type=float, default=3.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        _serve(args.port, args.quiet, args.settle_seconds)


if __name__ == "__main__":
    main()
