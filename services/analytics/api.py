"""gRPC transport of the analytics service."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format

from mesh.auth.identity import current_caller
from protos.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics.service import AnalyticsService, RawEvent


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


class AnalyticsApi(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, service: AnalyticsService) -> None:
        self._service = service

    async def IngestEvents(
        self,
        request: analytics_pb2.IngestEventsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> analytics_pb2.IngestEventsResponse:
        result = await self._service.ingest(
            [_raw(e) for e in request.events], request.ByteSize(), current_caller().user_id
        )
        return analytics_pb2.IngestEventsResponse(
            accepted=result.accepted,
            duplicates=result.duplicates,
            rejected=[analytics_pb2.RejectedEvent(index=i, reason=r) for i, r in result.rejected],
        )
