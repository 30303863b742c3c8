"""Request bytes that are not a valid message are INVALID_ARGUMENT on every method, never the
UNKNOWN grpc-python's own deserializer answers (against a real grpc.aio server with the
mesh's interceptor, a service of the real protos, health and reflection)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from prometheus_client import REGISTRY

from mesh.auth.tokens import TokenSettings, TokenVerifier
from mesh.grpc_server import HealthServicer, ServiceInterceptor
from protos.users.v1 import users_pb2, users_pb2_grpc

SERVICE = "users.v1.UsersService"
NOT_A_MESSAGE = b"\x0a\x05ab"  # field 1, 5 bytes long, then only 2


class Users(users_pb2_grpc.UsersServiceServicer):
    async def Login(
        self, request: users_pb2.LoginRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> users_pb2.TokenPair:
        return users_pb2.TokenPair(access_token=f"for {request.email}")


async def _no_keys() -> list[dict[str, Any]]:
    return []


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    verifier = TokenVerifier(_no_keys, TokenSettings())
    server = grpc.aio.server(interceptors=[ServiceInterceptor([SERVICE], verifier)])
    users_pb2_grpc.add_UsersServiceServicer_to_server(Users(), server)  # type: ignore[abstract]
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([SERVICE, health.SERVICE_NAME], server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
            yield opened
    finally:
        await server.stop(None)


def _handled(method: str, code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code}
    return REGISTRY.get_sample_value("mesh_grpc_server_handled_total", labels) or 0.0


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code(), raised.value.details() or ""


async def test_a_service_method_parses_good_bytes_and_refuses_bad_ones(
    channel: grpc.aio.Channel,
) -> None:
    login = channel.unary_unary(f"/{SERVICE}/Login", None, None)
    good = users_pb2.LoginRequest(email="ada@example.org", password="x").SerializeToString()
    answer = users_pb2.TokenPair.FromString(await login(good, timeout=5))
    assert answer.access_token == "for ada@example.org"

    before = _handled("Login", "INVALID_ARGUMENT")
    code, details = await _code(login(NOT_A_MESSAGE, timeout=5))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in details
    assert "users.v1.LoginRequest" in details
    assert _handled("Login", "INVALID_ARGUMENT") == before + 1  # measured like any call


async def test_bad_bytes_are_refused_before_access_is_checked(channel: grpc.aio.Channel) -> None:
    get_me = channel.unary_unary(f"/{SERVICE}/GetMe", None, None)
    code, _ = await _code(get_me(NOT_A_MESSAGE, timeout=5))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await _code(get_me(b"", timeout=5))  # parses: then it needs a token
    assert code is grpc.StatusCode.UNAUTHENTICATED


async def test_health_check_and_watch_parse_their_requests(channel: grpc.aio.Channel) -> None:
    check = channel.unary_unary("/grpc.health.v1.Health/Check", None, None)
    ok = health_pb2.HealthCheckResponse.FromString(
        await check(health_pb2.HealthCheckRequest().SerializeToString(), timeout=5)
    )
    assert ok.status == health_pb2.HealthCheckResponse.SERVING
    code, details = await _code(check(b"\xff\xff", timeout=5))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.health.v1.HealthCheckRequest" in details

    # Watch writes with context.write rather than yielding.
    watch = channel.unary_stream("/grpc.health.v1.Health/Watch", None, None)
    stream = watch(health_pb2.HealthCheckRequest().SerializeToString(), timeout=5)
    first = health_pb2.HealthCheckResponse.FromString(await stream.read())
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    stream.cancel()
    code, _ = await _code(watch(b"\xff\xff", timeout=5).read())
    assert code is grpc.StatusCode.INVALID_ARGUMENT


async def test_health_lists_every_status(channel: grpc.aio.Channel) -> None:
    """The reference servicer leaves List UNIMPLEMENTED; the mesh's answers it."""
    list_ = channel.unary_unary("/grpc.health.v1.Health/List", None, None)
    answer = health_pb2.HealthListResponse.FromString(
        await list_(health_pb2.HealthListRequest().SerializeToString(), timeout=5)
    )
    assert answer.statuses[""].status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_stream_parses_each_request(channel: grpc.aio.Channel) -> None:
    path = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    info = channel.stream_stream(path, None, None)
    good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()

    async def requests(*items: bytes) -> AsyncIterator[bytes]:
        for item in items:
            yield item

    answers = [
        reflection_pb2.ServerReflectionResponse.FromString(raw)
        async for raw in info(requests(good), timeout=5)
    ]
    names = {s.name for s in answers[0].list_services_response.service}
    assert SERVICE in names

    call = info(requests(good, b"\xff\xff"), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
