"""ErrorInfo details: reasons and metadata through gRPC trailers into HTTP problems."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio

from mesh.errors import (
    Aborted,
    FailedPrecondition,
    IdempotencyKeyReused,
    NotFound,
    PreconditionFailed,
    details_from_trailers,
    to_grpc_status,
)
from mesh.problem import problem_from_rpc_error, problem_from_service_error


def as_rpc_error(error: Any) -> grpc.aio.AioRpcError:
    status = to_grpc_status(error)
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata),
        status.details, None,
    )  # fmt: skip


def test_reason_and_metadata_round_trip() -> None:
    status = to_grpc_status(Aborted("only 3 left", reason="OUT", metadata={"left": "3"}))
    details = details_from_trailers(status.trailing_metadata)
    assert (details.reason, dict(details.metadata)) == ("OUT", {"left": "3"})
    plain = details_from_trailers(to_grpc_status(NotFound("x")).trailing_metadata)
    assert (plain.reason, dict(plain.metadata)) == ("", {})


def test_precondition_failed_is_412() -> None:
    error = PreconditionFailed("changed meanwhile", metadata={"currentVersion": "4"})
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    problem = problem_from_rpc_error(as_rpc_error(error), upstream="catalog")
    assert (problem.status, problem.title, problem.detail) == (
        412,
        "Precondition Failed",
        "changed meanwhile",
    )
    assert problem.extensions == {"reason": "PRECONDITION_FAILED", "currentVersion": 4}
    assert problem_from_service_error(error).status == 412


def test_idempotency_key_reused_is_422() -> None:
    problem = problem_from_rpc_error(as_rpc_error(IdempotencyKeyReused("no")), upstream="c")
    assert problem.status == 422
    assert problem.extensions == {"reason": "IDEMPOTENCY_KEY_REUSED"}


def test_a_reason_only_counts_with_its_code() -> None:
    error = FailedPrecondition("plain", reason="SOMETHING")
    assert problem_from_rpc_error(as_rpc_error(error), upstream="c").status == 400
    spoofed = Aborted("x", reason="PRECONDITION_FAILED")
    assert problem_from_rpc_error(as_rpc_error(spoofed), upstream="c").status == 409


def test_metadata_numbers_become_json_numbers() -> None:
    error = Aborted(
        "only 3 left",
        reason="INSUFFICIENT_STOCK",
        metadata={"availableStock": "3", "ratio": "0.5", "flag": "true", "name": "x y",
                  "quoted": '"s"', "list": "[1]"},
    )  # fmt: skip
    problem = problem_from_rpc_error(as_rpc_error(error), upstream="catalog")
    assert problem.status == 409
    assert problem.extensions == {
        "reason": "INSUFFICIENT_STOCK",
        "availableStock": 3,
        "ratio": 0.5,
        "flag": True,
        "name": "x y",
        "quoted": '"s"',
        "list": "[1]",
    }


def test_internal_errors_leak_no_error_info() -> None:
    class Internal(Aborted):
        code = grpc.StatusCode.INTERNAL

    problem = problem_from_rpc_error(
        as_rpc_error(Internal("boom", reason="SECRET", metadata={"dsn": "postgres://"})),
        upstream="c",
    )
    assert problem.status == 500
    assert problem.extensions == {}
