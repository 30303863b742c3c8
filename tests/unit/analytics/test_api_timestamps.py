"""A Timestamp out of its range (which only a direct gRPC caller can send; the gateway's JSON
parser refuses it) is INVALID_ARGUMENT naming the field, not an internal error."""

from __future__ import annotations

from typing import Any, cast

import pytest
from google.protobuf import timestamp_pb2

from mesh.errors import InvalidArgument
from protos.analytics.v1 import analytics_pb2
from services.analytics.api import AnalyticsApi
from services.analytics.queries import QueryLimits

GOOD = timestamp_pb2.Timestamp(seconds=1_790_000_000)


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (timestamp_pb2.Timestamp(seconds=1_790_000_000, nanos=-7), GOOD, "from"),
        (timestamp_pb2.Timestamp(seconds=-7_000_000_000_000), GOOD, "from"),
        (GOOD, timestamp_pb2.Timestamp(seconds=2**62), "to"),
        (GOOD, timestamp_pb2.Timestamp(seconds=1_790_000_000, nanos=10**9), "to"),
    ],
)
async def test_an_impossible_timestamp_is_invalid_argument(
    start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp, field: str
) -> None:
    api = AnalyticsApi(cast(Any, None), QueryLimits())  # refused before the service is asked
    request = analytics_pb2.CountEventsRequest(type="page.view", start_time=start, end_time=end)
    with pytest.raises(InvalidArgument) as raised:
        await api.CountEvents(request, cast(Any, None))
    assert [e.field for e in raised.value.field_errors] == [field]
    assert "not a valid Timestamp" in raised.value.field_errors[0].message
