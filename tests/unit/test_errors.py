from __future__ import annotations

import grpc

from mesh.errors import (
    FieldError,
    NotFound,
    ResourceExhausted,
    details_from_trailers,
    invalid,
    to_grpc_status,
)


def test_field_errors_round_trip_through_grpc_trailers() -> None:
    status = to_grpc_status(invalid([FieldError("email", "bad"), FieldError("events[2]", "x")]))
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    assert status.details == "email: bad; events[2]: x"
    details = details_from_trailers(status.trailing_metadata)
    assert details.field_errors == (FieldError("email", "bad"), FieldError("events[2]", "x"))
    assert details.retry_after_seconds is None


def test_retry_info_round_trips() -> None:
    status = to_grpc_status(ResourceExhausted("slow down", retry_after_seconds=12.5))
    assert details_from_trailers(status.trailing_metadata).retry_after_seconds == 12.5


def test_plain_errors_and_garbage_trailers_carry_no_details() -> None:
    status = to_grpc_status(NotFound("nope"))
    assert status.code is grpc.StatusCode.NOT_FOUND
    assert details_from_trailers(status.trailing_metadata).field_errors == ()
    assert (
        details_from_trailers([("grpc-status-details-bin", b"\xff\x00garbage")]).field_errors == ()
    )
    assert details_from_trailers(None).field_errors == ()
