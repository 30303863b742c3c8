"""Spans of code under test that uses the global tracer provider, kept in memory.

The first `capture()` installs a global provider (once per process: OpenTelemetry allows no
other) whose sampler and span processing are those of `mesh.telemetry` -
`MeshSampler` and `KeepErrorTraces` - with the ratio and `keep_errors` each capture asks
for. Outside a capture nothing is kept. No client library is instrumented here.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from mesh.tail_sampling import KeepErrorTraces, MeshSampler


class _Collector(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] | None = None

    def on_end(self, span: ReadableSpan) -> None:
        if self.spans is not None:
            self.spans.append(span)


class _Switch(Sampler, SpanProcessor):
    """The sampler and the processor of the global provider, replaced per capture."""

    def __init__(self) -> None:
        self.sampler: Sampler = MeshSampler(0.0, keep_errors=False)
        self.processor: SpanProcessor | None = None

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        return self.sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return "capture"

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.processor is not None:
            self.processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.processor is not None:
            self.processor.on_end(span)


_switch = _Switch()
_lock = threading.Lock()
_installed = False


def _install() -> None:
    global _installed
    with _lock:
        if not _installed:
            provider = TracerProvider(sampler=_switch)
            provider.add_span_processor(_switch)
            trace.set_tracer_provider(provider)
            _installed = True


@contextlib.contextmanager
def capture(ratio: float = 1.0, *, keep_errors: bool = True) -> Iterator[list[ReadableSpan]]:
    """The spans exported (as `mesh.telemetry` would export them) while the block runs."""
    _install()
    collector = _Collector()
    collector.spans = []
    _switch.sampler = MeshSampler(ratio, keep_errors=keep_errors)
    _switch.processor = KeepErrorTraces(collector) if keep_errors else collector
    try:
        yield collector.spans
    finally:
        _switch.processor = None
        _switch.sampler = MeshSampler(0.0, keep_errors=False)


def tracer() -> trace.Tracer:
    _install()
    return trace.get_tracer("tests")
