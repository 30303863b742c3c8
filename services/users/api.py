"""gRPC transport of the users service: protos in, domain calls, protos out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import grpc
from google.protobuf import empty_pb2

from mesh.auth.keys import SigningKey, public_jwk
from protos.users.v1 import users_pb2, users_pb2_grpc
from services.users.service import UsersService
from services.users.sessions import SessionService, TokenPair
from services.users.store import UserRecord
from services.users.throttle import client_address

# Set by the gateway to the address its client connected from (it overwrites any value a
# client sent); only the gateway reaches this service.
CLIENT_ADDRESS_KEY: Final = "x-client-address"

Context = grpc.aio.ServicerContext[Any, Any]


def user_to_proto(user: UserRecord) -> users_pb2.User:
    message = users_pb2.User(
        id=str(user.id), email=user.email, display_name=user.display_name, roles=list(user.roles)
    )
    message.created_at.FromDatetime(user.created_at)
    return message


def pair_to_proto(pair: TokenPair) -> users_pb2.TokenPair:
    return users_pb2.TokenPair(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        token_type=pair.token_type,
        expires_in=pair.expires_in,
    )


def jwks_to_proto(keys: Sequence[SigningKey]) -> users_pb2.Jwks:
    fields = ("kty", "crv", "x", "kid", "alg", "use")
    return users_pb2.Jwks(
        keys=[users_pb2.Jwk(**{f: str(public_jwk(k)[f]) for f in fields}) for k in keys]
    )


def _caller_address(context: Context) -> str:
    forwarded = None
    for key, value in context.invocation_metadata() or ():
        if key == CLIENT_ADDRESS_KEY:
            forwarded = value if isinstance(value, str) else value.decode(errors="replace")
    return client_address(forwarded, context.peer())


class UsersApi(users_pb2_grpc.UsersServiceServicer):
    def __init__(
        self,
        users: UsersService,
        sessions: SessionService,
        signing_keys: Sequence[SigningKey],
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._jwks = jwks_to_proto(signing_keys)

    async def Register(
        self, request: users_pb2.RegisterRequest, context: Context
    ) -> users_pb2.User:
        user = await self._users.register(request.email, request.password, request.display_name)
        return user_to_proto(user)

    async def Login(self, request: users_pb2.LoginRequest, context: Context) -> users_pb2.TokenPair:
        pair = await self._sessions.login(request.email, request.password, _caller_address(context))
        return pair_to_proto(pair)

    async def Refresh(
        self, request: users_pb2.RefreshRequest, context: Context
    ) -> users_pb2.TokenPair:
        return pair_to_proto(await self._sessions.refresh(request.refresh_token))

    async def Logout(self, request: users_pb2.LogoutRequest, context: Context) -> empty_pb2.Empty:
        await self._sessions.logout(request.refresh_token)
        return empty_pb2.Empty()

    async def GetMe(self, request: users_pb2.GetMeRequest, context: Context) -> users_pb2.User:
        return user_to_proto(await self._users.get_me())

    async def UpdateMe(
        self, request: users_pb2.UpdateMeRequest, context: Context
    ) -> users_pb2.User:
        return user_to_proto(await self._users.update_me(request.display_name))

    async def GetUser(self, request: users_pb2.GetUserRequest, context: Context) -> users_pb2.User:
        return user_to_proto(await self._users.get_user(request.id))

    async def ListUsers(
        self, request: users_pb2.ListUsersRequest, context: Context
    ) -> users_pb2.ListUsersResponse:
        page_size = request.page_size if request.HasField("page_size") else None
        page = await self._users.list_users(page_size, request.page_token)
        return users_pb2.ListUsersResponse(
            users=[user_to_proto(u) for u in page.users], next_page_token=page.next_page_token
        )

    async def GetJwks(self, request: users_pb2.GetJwksRequest, context: Context) -> users_pb2.Jwks:
        return self._jwks
