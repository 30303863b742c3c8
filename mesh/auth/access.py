"""Who may call a method: read from its `(mesh.v1.access)` option, deny by default.

One function decides for both the gateway and the services, so the two never disagree.
"""

from __future__ import annotations

from google.protobuf.descriptor import MethodDescriptor

from mesh.auth.identity import Caller
from mesh.auth.tokens import InvalidToken, TokenVerifier
from mesh.errors import PermissionDenied, Unauthenticated
from protos.mesh.v1 import access_pb2

PUBLIC = access_pb2.ACCESS_PUBLIC
USER = access_pb2.ACCESS_USER
ADMIN = access_pb2.ACCESS_ADMIN
UNSPECIFIED = access_pb2.ACCESS_UNSPECIFIED


def method_access(method: MethodDescriptor) -> int:
    access: int = method.GetOptions().Extensions[access_pb2.access]
    return access


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


async def authorize(
    access: int, authorization: str | None, verifier: TokenVerifier
) -> Caller | None:
    """The caller allowed by `access`, None for a public call; raises when not allowed."""
    if access == PUBLIC:
        token = bearer_token(authorization)
        if token is None:
            return None
        try:
            return await verifier.verify(token)
        except InvalidToken:
            return None  # a public method works the same for a stale token
    if access not in (USER, ADMIN):
        raise PermissionDenied("this method declares no access and is closed")
    if authorization is None:
        raise Unauthenticated("sign in first: this call needs a bearer access token")
    token = bearer_token(authorization)
    if token is None:
        raise Unauthenticated("the Authorization header must be 'Bearer <access token>'")
    try:
        caller = await verifier.verify(token)
    except InvalidToken as exc:
        raise Unauthenticated(str(exc)) from None
    if access == ADMIN and not caller.is_admin:
        raise PermissionDenied("this call needs the admin role")
    return caller
