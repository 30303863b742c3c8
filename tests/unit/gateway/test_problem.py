"""mesh.problem: the gRPC -> HTTP table, problem documents and the error middleware."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import grpc.aio
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from yarl import URL

from mesh.errors import FieldError, InvalidArgument, ResourceExhausted, to_grpc_status
from mesh.problem import (
    GRPC_TO_HTTP,
    PROBLEM_CONTENT_TYPE,
    ProblemError,
    current_trace_id,
    problem_body,
    problem_from_rpc_error,
    problem_middleware,
)
from mesh.request_id import echo_request_id, request_id_middleware

# The google.rpc.Code -> HTTP table (google/rpc/code.proto).
EXPECTED = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_status_table_covers_every_code(code: grpc.StatusCode) -> None:
    assert GRPC_TO_HTTP[code] == EXPECTED[code.name]


def rpc_error(
    code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, Any], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details, None
    )


def from_service_error(error: Any) -> grpc.aio.AioRpcError:
    status = to_grpc_status(error)
    return rpc_error(status.code, status.details, tuple(status.trailing_metadata))


def test_rpc_error_keeps_the_service_message_and_field_violations() -> None:
    error = from_service_error(InvalidArgument("bad", field_errors=(FieldError("a.b", "no"),)))
    problem = problem_from_rpc_error(error, upstream="users")
    assert (problem.status, problem.detail) == (400, "bad")
    assert problem.errors == (FieldError("a.b", "no"),)


def test_retry_info_becomes_retry_after_rounded_up() -> None:
    error = from_service_error(ResourceExhausted("later", retry_after_seconds=1.2))
    problem = problem_from_rpc_error(error, upstream="users")
    assert (problem.status, problem.headers["Retry-After"]) == (429, "2")


def test_unauthenticated_asks_for_a_bearer_token() -> None:
    problem = problem_from_rpc_error(
        rpc_error(grpc.StatusCode.UNAUTHENTICATED, "token expired"), upstream="users"
    )
    assert (problem.status, problem.detail) == (401, "token expired")
    assert problem.headers == {"WWW-Authenticate": "Bearer"}


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ],
)
def test_server_side_failures_do_not_echo_the_upstream_message(code: grpc.StatusCode) -> None:
    problem = problem_from_rpc_error(
        rpc_error(code, "Exception: password=hunter2 at 10.0.0.3:5432"), upstream="catalog"
    )
    assert "hunter2" not in problem.detail
    assert "10.0.0.3" not in problem.detail
    assert "'catalog'" in problem.detail


def test_problem_body_members() -> None:
    problem = ProblemError(
        422, "nope", errors=[FieldError("x", "bad")], extensions={"upstream": "chat"}
    )
    body = orjson.loads(problem_body(problem, instance="/a", request_id="r1"))
    assert body == {
        "type": "about:blank",
        "title": "Unprocessable Entity",
        "status": 422,
        "detail": "nope",
        "instance": "/a",
        "requestId": "r1",
        "errors": [{"field": "x", "message": "bad"}],
        "upstream": "chat",
    }


def test_titles_default_to_the_reason_phrase() -> None:
    assert ProblemError(404).title == "Not Found"
    assert ProblemError(404).detail == "Not Found"
    assert ProblemError(499).title == "Client Closed Request"


def test_trace_id_of_the_active_span() -> None:
    assert current_trace_id() is None
    context = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    with trace.use_span(NonRecordingSpan(context)):
        assert current_trace_id() == "0af7651916cd43dd8448eb211c80319c"
        body = orjson.loads(problem_body(ProblemError(500), instance="/", request_id=None))
    assert body["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert "requestId" not in body


async def _problem_app_client() -> TestClient[web.Request, web.Application]:
    async def raise_problem(request: web.Request) -> web.Response:
        raise ProblemError(409, "taken", errors=[FieldError("email", "in use")])

    async def explode(request: web.Request) -> web.Response:
        raise KeyError("internal-secret")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def custom_text(request: web.Request) -> web.Response:
        raise web.HTTPBadRequest(text="custom words")

    app = web.Application(middlewares=[request_id_middleware, problem_middleware])
    app.on_response_prepare.append(echo_request_id)
    app.router.add_get("/problem", raise_problem)
    app.router.add_get("/explode", explode)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/custom", custom_text)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def read_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status
    assert response.content_type == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = orjson.loads(await response.read())
    assert body["requestId"] == response.headers["X-Request-ID"]
    return body


async def test_middleware_renders_problems_in_any_aiohttp_app(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await _problem_app_client()
    try:
        body = await read_problem(await client.get("/problem"), 409)
        assert (body["detail"], body["instance"]) == ("taken", "/problem")
        assert body["errors"] == [{"field": "email", "message": "in use"}]

        with caplog.at_level(logging.ERROR, logger="mesh.problem"):
            response = await client.get("/explode")
            body = await read_problem(response, 500)
        assert "internal-secret" not in await response.text()
        assert any(r.exc_info and "internal-secret" in str(r.exc_info[1]) for r in caplog.records)

        body = await read_problem(await client.get("/missing"), 404)
        assert body["title"] == "Not Found"
        response = await client.post("/problem")
        await read_problem(response, 405)
        assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}

        body = await read_problem(await client.get("/custom"), 400)
        assert body["detail"] == "custom words"

        redirect = await client.get("/redirect", allow_redirects=False)
        assert redirect.status == 302
        assert redirect.headers["Location"] == "/elsewhere"
        assert redirect.content_type != PROBLEM_CONTENT_TYPE
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("sent", "instance"),
    [
        ("/missing/a%20b", "/missing/a%20b"),
        ("/missing/%C3%B5w%09%0F", "/missing/%C3%B5w%09%0F"),  # found by fuzzing: was raw
        ("/missing/100%25:x@y", "/missing/100%25:x@y"),
        ("/missing/%22%3C%3E%5C%5E%60%7B%7C%7D", "/missing/%22%3C%3E%5C%5E%60%7B%7C%7D"),
    ],
)
async def test_instance_is_a_uri_reference_whatever_the_path(sent: str, instance: str) -> None:
    client = await _problem_app_client()
    try:
        body = await read_problem(await client.get(URL(sent, encoded=True)), 404)
        assert body["instance"] == instance
    finally:
        await client.close()
