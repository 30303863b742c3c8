"""OpenTelemetry bootstrap: one tracer provider per process.

Sampling is ParentBased(TraceIdRatio) with the ratio from `OTEL_TRACES_SAMPLER_ARG`. With
`OTEL_EXPORTER_OTLP_ENDPOINT` set, spans go out over OTLP/gRPC in batches (Jaeger takes
OTLP natively); unset, tracing stays on in-process (ids in logs and problems) and exports
nothing.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from mesh.common import CommonSettings


def setup_tracing(settings: CommonSettings) -> TracerProvider:
    resource = Resource.create(
        {
            "service.name": settings.service_name,
            "service.version": settings.version,
            "deployment.environment": settings.environment,
            "service.instance.id": settings.instance_id,
        }
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.trace_ratio))
    )
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint
        insecure = endpoint.startswith("http://")
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=insecure))
        )
    trace.set_tracer_provider(provider)
    _instrument_clients()
    return provider


def _instrument_clients() -> None:
    """Client libraries whose calls become child spans (database and cache hops)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentors = (AsyncPGInstrumentor(), RedisInstrumentor(), PymongoInstrumentor())  # type: ignore[no-untyped-call]
    for instrumentor in instrumentors:
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def current_trace_id() -> str | None:
    """The active trace id as 32 hex characters, or None outside a span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
