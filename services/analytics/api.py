"""gRPC transport of the analytics service: protos to domain calls and back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from mesh.auth.identity import current_caller
from mesh.errors import FieldError, InvalidArgument
from protos.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics.queries import QueryLimits, funnel_query, series_query, top_query
from services.analytics.service import AnalyticsService, RawEvent, Series

Context = grpc.aio.ServicerContext[Any, Any]


def _raw(event: analytics_pb2.Event) -> RawEvent:
    properties = (
        json_format.MessageToDict(event.properties) if event.HasField("properties") else None
    )
    return RawEvent(
        event.event_id,
        event.type,
        event.timestamp,
        event.sent_at,
        event.anonymous_id,
        properties,
        event.ByteSize(),
    )


def _time(request: Message, field: str) -> datetime | None:
    """A Timestamp field as a datetime; INVALID_ARGUMENT (by its JSON name) when the seconds
    or nanos are out of the Timestamp's range, which a direct gRPC caller can send."""
    if not request.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(request, field)
    try:
        return value.ToDatetime(tzinfo=UTC)
    except ValueError:
        name = request.DESCRIPTOR.fields_by_name[field].json_name
        problem = "is not a valid Timestamp (0001-01-01 to 9999-12-31, nanos 0 to 999999999)"
        raise InvalidArgument(f"{name}: {problem}", (FieldError(name, problem),)) from None


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _buckets(series: Series) -> list[analytics_pb2.Bucket]:
    return [analytics_pb2.Bucket(start=_timestamp(s), count=n) for s, n in series.buckets]


def _value(value: Any) -> struct_pb2.Value:
    return json_format.ParseDict(value, struct_pb2.Value())


class AnalyticsApi(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, service: AnalyticsService, limits: QueryLimits) -> None:
        self._service = service
        self._limits = limits

    async def IngestEvents(
        self, request: analytics_pb2.IngestEventsRequest, context: Context
    ) -> analytics_pb2.IngestEventsResponse:
        result = await self._service.ingest(
            [_raw(e) for e in request.events], request.ByteSize(), current_caller().user_id
        )
        return analytics_pb2.IngestEventsResponse(
            accepted=result.accepted,
            duplicates=result.duplicates,
            rejected=[analytics_pb2.RejectedEvent(index=i, reason=r) for i, r in result.rejected],
        )

    async def CountEvents(
        self, request: analytics_pb2.CountEventsRequest, context: Context
    ) -> analytics_pb2.CountEventsResponse:
        query = series_query(
            type_=request.type,
            start=_time(request, "start_time"),
            end=_time(request, "end_time"),
            interval=request.interval,
            tz=request.tz,
            source=request.source,
            limits=self._limits,
        )
        series = await self._service.counts(query)
        return analytics_pb2.CountEventsResponse(buckets=_buckets(series), total=series.total)

    async def CountUniques(
        self, request: analytics_pb2.CountUniquesRequest, context: Context
    ) -> analytics_pb2.CountUniquesResponse:
        query = series_query(
            type_=request.type,
            start=_time(request, "start_time"),
            end=_time(request, "end_time"),
            interval=request.interval,
            tz=request.tz,
            source=request.source,
            limits=self._limits,
        )
        series = await self._service.uniques(query)
        return analytics_pb2.CountUniquesResponse(buckets=_buckets(series))

    async def TopValues(
        self, request: analytics_pb2.TopValuesRequest, context: Context
    ) -> analytics_pb2.TopValuesResponse:
        query = top_query(
            type_=request.type,
            start=_time(request, "start_time"),
            end=_time(request, "end_time"),
            property_=request.property,
            limit=request.limit if request.HasField("limit") else None,
            source=request.source,
            limits=self._limits,
        )
        values = await self._service.top(query)
        return analytics_pb2.TopValuesResponse(
            values=[analytics_pb2.ValueCount(value=_value(v), count=n) for v, n in values]
        )

    async def Funnel(
        self, request: analytics_pb2.FunnelRequest, context: Context
    ) -> analytics_pb2.FunnelResponse:
        query = funnel_query(
            steps=list(request.steps),
            within=request.within,
            start=_time(request, "start_time"),
            end=_time(request, "end_time"),
            source=request.source,
            limits=self._limits,
        )
        steps = await self._service.funnel(query)
        return analytics_pb2.FunnelResponse(
            steps=[analytics_pb2.FunnelStep(type=t, users=n) for t, n in steps]
        )
