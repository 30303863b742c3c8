"""OpenTelemetry bootstrap: one tracer provider per process.

Sampling (`mesh.tail_sampling.MeshSampler`): ParentBased(TraceIdRatio) with the ratio from
`OTEL_TRACES_SAMPLER_ARG` (default 1.0); traces that end in an error in this process are
kept whatever the ratio (`MESH_TRACES_KEEP_ERRORS`, default true). With
`OTEL_EXPORTER_OTLP_ENDPOINT` set, spans go out over OTLP/gRPC in batches (Jaeger takes OTLP
natively; `OTEL_BSP_*` tune the batches); unset, tracing stays on in-process (ids in logs,
problems and exemplars) and exports nothing. `OTEL_SDK_DISABLED=true` switches tracing off
altogether (no spans, no ids, no instrumentation).

Resource attributes: `service.name`, `service.version`, `deployment.environment`,
`service.instance.id`. Client libraries are instrumented once per process: asyncpg, redis
(also redis.asyncio), pymongo (also the async client) and the aiohttp client (the gateway's
proxying to chat), so their calls are child spans of the request that made them.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from mesh.common import CommonSettings
from mesh.settings import Env
from mesh.tail_sampling import KeepErrorTraces, MeshSampler

KEEP_ERRORS_VAR = "MESH_TRACES_KEEP_ERRORS"
DISABLED_VAR = "OTEL_SDK_DISABLED"


@dataclass(frozen=True, slots=True)
class TracingOptions:
    """The tracing settings `CommonSettings` does not hold."""

    keep_errors: bool = True
    disabled: bool = False

    @classmethod
    def from_env(cls, env: Env) -> TracingOptions:
        return cls(
            keep_errors=env.bool(KEEP_ERRORS_VAR, True), disabled=env.bool(DISABLED_VAR, False)
        )


def setup_tracing(
    settings: CommonSettings,
    options: TracingOptions | None = None,
    *,
    processor: SpanProcessor | None = None,
) -> TracerProvider:
    """Install this process's tracer provider and instrument the client libraries.

    `processor` replaces the OTLP batch processor (tests give an in-memory one).
    """
    options = options or TracingOptions.from_env(Env())
    resource = Resource.create(
        {
            "service.name": settings.service_name,
            "service.version": settings.version,
            "deployment.environment": settings.environment,
            "service.instance.id": settings.instance_id,
        }
    )
    sampler = MeshSampler(settings.trace_ratio, keep_errors=options.keep_errors)
    provider = TracerProvider(resource=resource, sampler=sampler)
    if options.disabled:
        return provider  # not installed: the API's no-op tracer stays in place
    if processor is None and settings.otlp_endpoint:
        processor = BatchSpanProcessor(_otlp_exporter(settings.otlp_endpoint))
    if processor is not None:
        if options.keep_errors:
            processor = KeepErrorTraces(processor)
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _instrument_clients()
    return provider


def _otlp_exporter(endpoint: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))


def _instrument_clients() -> None:
    """Client libraries whose calls become child spans (database, cache and HTTP hops)."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentors = (
        AsyncPGInstrumentor(),  # type: ignore[no-untyped-call]
        RedisInstrumentor(),
        PymongoInstrumentor(),
        AioHttpClientInstrumentor(),
    )
    for instrumentor in instrumentors:
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def current_trace_id() -> str | None:
    """The active trace id as 32 hex characters, or None outside a span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def exemplar(span: trace.Span | None = None, *, error: bool = False) -> dict[str, str] | None:
    """A Prometheus exemplar naming `span`'s trace (the current span's by default) when that
    trace is exported: sampled, or recorded and ending in `error` (kept by `KeepErrorTraces`).
    None otherwise, so that no exemplar points at a trace that is not in the trace store."""
    span = span or trace.get_current_span()
    context = span.get_span_context()
    if context.trace_flags.sampled or (error and span.is_recording()):
        return {"trace_id": format(context.trace_id, "032x")}
    return None
