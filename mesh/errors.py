"""Domain errors and their gRPC wire form.

Services raise these from domain code; the gRPC server interceptor turns them into a gRPC
status whose details carry a `google.rpc.BadRequest` (per-field violations) and, where they
apply, a `google.rpc.RetryInfo` and a `google.rpc.ErrorInfo` (a machine-readable `reason` in
domain "mesh" with string `metadata`, e.g. the stock left after a refused reservation). The
gateway reads the same details back (`details_from_trailers`) to build an RFC 9457 problem.
Field names are the proto3 JSON names clients see (lowerCamelCase, with `[i]` for list items).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

STATUS_DETAILS_KEY = "grpc-status-details-bin"
ERROR_DOMAIN: Final = "mesh"


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """What a gRPC error carries besides its code and message."""

    field_errors: tuple[FieldError, ...] = ()
    retry_after_seconds: float | None = None
    reason: str = ""  # the ErrorInfo reason, "" when there was none
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ServiceError(Exception):
    """A failure the caller should see with a gRPC status code and a clear message.

    `reason` (UPPER_SNAKE_CASE) and `metadata` become a google.rpc.ErrorInfo; a subclass may
    give a `default_reason`.
    """

    detail: str
    field_errors: Sequence[FieldError] = field(default_factory=tuple)
    retry_after_seconds: float | None = None
    reason: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    code = grpc.StatusCode.UNKNOWN
    default_reason: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = self.default_reason

    def __str__(self) -> str:
        return self.detail


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED


class PreconditionFailed(ServiceError):
    """A conditional write's precondition (If-Match, an expected version) does not hold.

    FAILED_PRECONDITION on the wire; its reason makes the gateway answer 412.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "PRECONDITION_FAILED"


class IdempotencyKeyReused(ServiceError):
    """An idempotency key came back with a different request: the gateway answers 422."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "IDEMPOTENCY_KEY_REUSED"


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


def invalid(fields: Iterable[FieldError], detail: str | None = None) -> InvalidArgument:
    """An InvalidArgument listing every bad field, with a summary naming them."""
    errors = tuple(fields)
    summary = detail or "; ".join(f"{e.field}: {e.message}" for e in errors)
    return InvalidArgument(summary, field_errors=errors)


def to_grpc_status(error: ServiceError) -> grpc.Status:
    status = status_pb2.Status(code=error.code.value[0], message=error.detail)
    if error.field_errors:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=e.field, description=e.message)
                for e in error.field_errors
            ]
        )
        status.details.add().Pack(bad_request)
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    if error.reason:
        info = error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=dict(error.metadata)
        )
        status.details.add().Pack(info)
    result: grpc.Status = rpc_status.to_status(status)
    return result


def details_from_trailers(trailers: Sequence[tuple[str, str | bytes]] | None) -> ErrorDetails:
    """Decode the rich error details a service attached to a failed call, if any."""
    raw = next((v for k, v in trailers or () if k == STATUS_DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return ErrorDetails()
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except Exception:  # a malformed trailer from a peer is ignored, not fatal
        return ErrorDetails()
    field_errors: list[FieldError] = []
    retry_after: float | None = None
    reason, metadata = "", {}
    for any_detail in status.details:
        if any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            any_detail.Unpack(bad_request)
            field_errors += [
                FieldError(v.field, v.description) for v in bad_request.field_violations
            ]
        elif any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_detail.Unpack(retry)
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
        elif any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
    return ErrorDetails(tuple(field_errors), retry_after, reason, metadata)
