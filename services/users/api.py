"""gRPC transport of the users service: protos in, domain calls, protos out."""

from __future__ import annotations

from typing import Any

import grpc

from protos.users.v1 import users_pb2, users_pb2_grpc
from services.users.service import UsersService
from services.users.store import UserRecord


def user_to_proto(user: UserRecord) -> users_pb2.User:
    message = users_pb2.User(
        id=str(user.id), email=user.email, display_name=user.display_name, roles=list(user.roles)
    )
    message.created_at.FromDatetime(user.created_at)
    return message


class UsersApi(users_pb2_grpc.UsersServiceServicer):
    def __init__(self, service: UsersService) -> None:
        self._service = service

    async def Register(
        self, request: users_pb2.RegisterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> users_pb2.User:
        user = await self._service.register(request.email, request.password, request.display_name)
        return user_to_proto(user)
