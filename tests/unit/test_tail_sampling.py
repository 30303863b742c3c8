"""mesh.tail_sampling: ParentBased(TraceIdRatio) refined, and error traces kept whatever the
ratio (through a real TracerProvider, its span processing and an in-memory exporter)."""

from __future__ import annotations

import random

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from mesh.tail_sampling import KEPT_ATTRIBUTE, KeepErrorTraces, MeshSampler


def remote_parent(sampled: bool) -> Context:
    context = SpanContext(
        random.getrandbits(128),
        random.getrandbits(64),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(context))


def decide(sampler: MeshSampler, **kwargs: object) -> Decision:
    result = sampler.should_sample(
        kwargs.pop("parent", None),  # type: ignore[arg-type]
        kwargs.pop("trace_id", random.getrandbits(128)),  # type: ignore[arg-type]
        "span",
        **kwargs,  # type: ignore[arg-type]
    )
    return result.decision


def test_the_ratio_samples_that_share_of_new_traces() -> None:
    rng = random.Random(7)
    sampler = MeshSampler(0.1, keep_errors=False)
    sampled = sum(
        decide(sampler, trace_id=rng.getrandbits(128), kind=SpanKind.SERVER)
        is Decision.RECORD_AND_SAMPLE
        for _ in range(4000)
    )
    assert 320 <= sampled <= 480  # 10 % of 4,000, give or take 20 %


def test_a_remote_parent_decides_for_its_children() -> None:
    nothing = MeshSampler(0.0, keep_errors=False)
    everything = MeshSampler(1.0, keep_errors=False)
    assert decide(nothing, parent=remote_parent(True)) is Decision.RECORD_AND_SAMPLE
    assert decide(everything, parent=remote_parent(False)) is Decision.DROP
    keeping = MeshSampler(1.0, keep_errors=True)
    assert decide(keeping, parent=remote_parent(False)) is Decision.RECORD_ONLY


def test_background_client_calls_and_linked_roots() -> None:
    sampler = MeshSampler(1.0, keep_errors=True)
    assert decide(sampler, kind=SpanKind.CLIENT) is Decision.DROP  # an outbox poll, say
    never = MeshSampler(0.0, keep_errors=False)
    sampled_link = Link(trace.get_current_span(remote_parent(True)).get_span_context())
    other_link = Link(trace.get_current_span(remote_parent(False)).get_span_context())
    assert decide(never, kind=SpanKind.CONSUMER, links=[sampled_link]) is (
        Decision.RECORD_AND_SAMPLE
    )
    assert decide(never, kind=SpanKind.CONSUMER, links=[other_link]) is Decision.DROP


def test_a_recorded_span_keeps_its_attributes() -> None:
    result = MeshSampler(1.0, keep_errors=False).should_sample(
        None, 1, "span", SpanKind.SERVER, {"http.route": "/x"}
    )
    assert result.attributes == {"http.route": "/x"}


def pipeline(ratio: float, keep_errors: bool) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider = TracerProvider(sampler=MeshSampler(ratio, keep_errors=keep_errors))
    provider.add_span_processor(KeepErrorTraces(processor) if keep_errors else processor)
    return provider.get_tracer("test"), exporter


def request(tracer: trace.Tracer, fail: bool, parent: Context | None = None) -> int:
    """A server span with two children (one a grandchild); returns the trace id."""
    with tracer.start_as_current_span("GET /x", context=parent, kind=SpanKind.SERVER) as root:
        with (
            tracer.start_as_current_span("call", kind=SpanKind.CLIENT),
            tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT),
        ):
            pass
        if fail:
            root.set_status(Status(StatusCode.ERROR))
    return root.get_span_context().trace_id


def test_an_unsampled_trace_that_fails_is_exported_whole_and_marked() -> None:
    tracer, exporter = pipeline(0.0, keep_errors=True)
    request(tracer, fail=False)
    assert exporter.get_finished_spans() == ()
    trace_id = request(tracer, fail=True)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["SELECT", "call", "GET /x"]
    assert {s.context.trace_id for s in spans} == {trace_id}
    assert all(s.context.trace_flags.sampled for s in spans)
    root = spans[-1]
    assert root.attributes is not None
    assert root.attributes[KEPT_ATTRIBUTE] == "error"
    assert spans[0].parent is not None
    assert spans[0].parent.span_id == spans[1].context.span_id  # the tree is intact


def test_a_failing_segment_under_an_unsampled_remote_parent_is_kept_too() -> None:
    tracer, exporter = pipeline(1.0, keep_errors=True)
    request(tracer, fail=False, parent=remote_parent(False))
    assert exporter.get_finished_spans() == ()
    request(tracer, fail=True, parent=remote_parent(False))
    assert len(exporter.get_finished_spans()) == 3


def test_sampled_traces_pass_unchanged_and_nothing_is_kept_without_keep_errors() -> None:
    tracer, exporter = pipeline(1.0, keep_errors=True)
    request(tracer, fail=False)
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    assert all(KEPT_ATTRIBUTE not in (s.attributes or {}) for s in spans)
    tracer, exporter = pipeline(0.0, keep_errors=False)
    request(tracer, fail=True)
    assert exporter.get_finished_spans() == ()


def test_the_buffer_is_bounded() -> None:
    exporter = InMemorySpanExporter()
    keeper = KeepErrorTraces(SimpleSpanProcessor(exporter), max_traces=10, max_spans=2)
    provider = TracerProvider(sampler=MeshSampler(0.0, keep_errors=True))
    provider.add_span_processor(keeper)
    tracer = provider.get_tracer("test")
    roots = [tracer.start_span("root", kind=SpanKind.SERVER) for _ in range(50)]
    for root in roots:  # children end, their roots never do: buffered, up to the bounds
        with tracer.start_as_current_span("child", context=trace.set_span_in_context(root)):
            pass
        for _ in range(5):
            tracer.start_span("more", context=trace.set_span_in_context(root)).end()
    assert keeper.buffered_traces == 10
    roots[-1].set_status(Status(StatusCode.ERROR))
    roots[-1].end()
    assert len(exporter.get_finished_spans()) == 3  # two buffered children and the root
