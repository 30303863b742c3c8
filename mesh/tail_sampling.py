"""Head sampling by trace id, and the error traces kept whatever the head decision was.

`MeshSampler` is ParentBased(TraceIdRatio) with three refinements:

* A root span of kind CLIENT (a database, cache or gRPC call made outside any request or
  job: an outbox poll, a presence refresh) is never sampled: background polling would
  otherwise fill the trace store with one-span traces.
* A root span with links (a stream consumer's batch, a chat delivery) is sampled when one of
  the contexts it links to was: the consumer's side of a sampled request is kept with it.
* With `keep_errors`, a span the ratio did not sample is still *recorded* (RECORD_ONLY: in
  memory, never exported by the batch processor) so that `KeepErrorTraces` can keep it.

`KeepErrorTraces` is a tail decision per process: it buffers the recorded, unsampled spans
of each trace until the trace's *local root* (a span whose parent is remote or absent: the
server span of a request, a consumer's batch span) ends. If that root ended in error (an
HTTP 5xx, a gRPC server fault, an exception) the buffered spans are handed to the exporting
processor marked sampled; otherwise they are dropped. So a request that ends in a 5xx is in
Jaeger even at a 1 % ratio: the gateway's segment always, and the segment of each service
whose own server span failed (a service that answered OK, e.g. before the gateway's own
deadline hit, is not kept: it never learns the outcome).

The price: with `keep_errors` every span of an unsampled trace is built (attributes and
all) before it is dropped, so CPU per request is close to that of 100 % sampling minus the
export. Turn it off (`MESH_TRACES_KEEP_ERRORS=false`) where that matters more than the
error traces; the alternative is tail sampling in an OpenTelemetry Collector, which needs
every span exported to it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

KEPT_ATTRIBUTE: Final = "mesh.sampling.kept"
"""Set to "error" on the local root of a trace kept by `KeepErrorTraces`."""

_TRACE_ID_LIMIT: Final = (1 << 64) - 1


class MeshSampler(Sampler):
    """ParentBased(TraceIdRatio), refined as the module docstring says."""

    def __init__(self, ratio: float, *, keep_errors: bool) -> None:
        self._ratio = ratio
        self._bound = TraceIdRatioBased.get_bound_for_rate(ratio)
        self._keep_errors = keep_errors
        self._unsampled = Decision.RECORD_ONLY if keep_errors else Decision.DROP

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
        parent_span = trace.get_current_span(parent_context)
        parent = parent_span.get_span_context()
        if parent.is_valid:
            if parent.trace_flags.sampled:
                decision = Decision.RECORD_AND_SAMPLE
            elif parent.is_remote or parent_span.is_recording():
                decision = self._unsampled
            else:  # under a dropped local parent: dropped too, like all its family
                decision = Decision.DROP
            return _result(decision, attributes, parent.trace_state)
        if kind is SpanKind.CLIENT:
            return _result(Decision.DROP, attributes, None)
        if trace_id & _TRACE_ID_LIMIT < self._bound or any(
            link.context.trace_flags.sampled for link in links or ()
        ):
            return _result(Decision.RECORD_AND_SAMPLE, attributes, None)
        return _result(self._unsampled, attributes, None)

    def get_description(self) -> str:
        keep = ",keep_errors" if self._keep_errors else ""
        return f"MeshSampler{{ratio={self._ratio}{keep}}}"


def _result(
    decision: Decision, attributes: Attributes, trace_state: TraceState | None
) -> SamplingResult:
    """The SDK gives a span the attributes its sampler returns: keep them if it records."""
    kept = attributes if decision is not Decision.DROP else None
    return SamplingResult(decision, kept, trace_state)


def is_error(span: ReadableSpan) -> bool:
    return span.status.status_code is StatusCode.ERROR


def _sampled_copy(span: ReadableSpan, mark: bool) -> ReadableSpan:
    """`span` as it would have been had the head sampler kept it."""
    context = span.get_span_context()
    assert context is not None
    attributes = dict(span.attributes or {})
    if mark:
        attributes[KEPT_ATTRIBUTE] = "error"
    return ReadableSpan(
        name=span.name,
        context=trace.SpanContext(
            context.trace_id,
            context.span_id,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=context.trace_state,
        ),
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class KeepErrorTraces(SpanProcessor):
    """Passes sampled spans to `exporting`; keeps unsampled ones only for error traces.

    Bounded: at most `max_traces` traces are buffered (the oldest is dropped first) and at
    most `max_spans` spans of each.
    """

    def __init__(
        self, exporting: SpanProcessor, *, max_traces: int = 4096, max_spans: int = 256
    ) -> None:
        self._exporting = exporting
        self._max_traces = max_traces
        self._max_spans = max_spans
        self._buffered: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def buffered_traces(self) -> int:
        return len(self._buffered)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._exporting.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        if context is None:
            return
        if context.trace_flags.sampled:
            self._exporting.on_end(span)
            return
        local_root = span.parent is None or span.parent.is_remote
        with self._lock:
            if not local_root:
                spans = self._buffered.get(context.trace_id)
                if spans is None:
                    spans = self._buffered[context.trace_id] = []
                    if len(self._buffered) > self._max_traces:
                        self._buffered.popitem(last=False)
                if len(spans) < self._max_spans:
                    spans.append(span)
                return
            kept = self._buffered.pop(context.trace_id, None)
        if not is_error(span):
            return
        for child in kept or ():
            self._exporting.on_end(_sampled_copy(child, mark=False))
        self._exporting.on_end(_sampled_copy(span, mark=True))

    def shutdown(self) -> None:
        self._exporting.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporting.force_flush(timeout_millis)
