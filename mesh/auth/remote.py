"""A token verifier for processes other than users: keys from users' GetJwks over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf import json_format

from mesh.auth.tokens import TokenSettings, TokenVerifier
from protos.users.v1 import users_pb2, users_pb2_grpc

JWKS_TIMEOUT_SECONDS = 2.0


@asynccontextmanager
async def remote_verifier(
    users_addresses: Sequence[str], settings: TokenSettings
) -> AsyncIterator[TokenVerifier]:
    target = "ipv4:" + ",".join(users_addresses)
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.lb_policy_name", "round_robin")]
    ) as channel:
        stub = users_pb2_grpc.UsersServiceStub(channel)

        async def fetch() -> list[dict[str, Any]]:
            jwks = await stub.GetJwks(users_pb2.GetJwksRequest(), timeout=JWKS_TIMEOUT_SECONDS)
            return [json_format.MessageToDict(k) for k in jwks.keys]

        yield TokenVerifier(fetch, settings)
