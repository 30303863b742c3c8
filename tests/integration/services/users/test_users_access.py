"""Access control of the users service's own interceptor: forged tokens, roles, rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization

from mesh.auth.keys import SigningKey
from mesh.backing_settings import StoreUrls
from protos.users.v1 import users_pb2, users_pb2_grpc
from services.users.admin import grant_admin
from tests.integration.services.conftest import RunningService
from tests.integration.services.users.support import (
    bearer,
    claims,
    clear_redis,
    login,
    new_key,
    register,
    running_users,
    sign,
    users_settings,
    users_stub,
)

Stub = users_pb2_grpc.UsersServiceStub


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, object], body: dict[str, object], signature: bytes = b"") -> str:
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(body))}.{b64(signature)}"


def hs256(secret: bytes, header: dict[str, object], body: dict[str, object]) -> str:
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(body))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def raw_public(key: SigningKey) -> bytes:
    return key.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(key: SigningKey) -> bytes:
    return key.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def tamper_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def tamper_payload(token: str, **changes: object) -> str:
    head, payload, signature = token.split(".")
    body = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    return f"{head}.{b64(orjson.dumps(body))}.{signature}"


@pytest.fixture
async def user_pair(stub: Stub) -> tuple[users_pb2.User, users_pb2.TokenPair]:
    user = await register(stub, "member@example.org")
    return user, await login(stub, "member@example.org")


async def test_a_valid_access_token_reads_its_own_account(
    stub: Stub, user_pair: tuple[users_pb2.User, users_pb2.TokenPair]
) -> None:
    user, pair = user_pair
    me = await stub.GetMe(users_pb2.GetMeRequest(), metadata=bearer(pair.access_token))
    assert me == user


FORGERIES: dict[str, Callable[[SigningKey, str, str, str], str]] = {
    "alg none": lambda key, sub, token, refresh: unsigned(
        {"alg": "none", "typ": "JWT", "kid": key.kid}, claims(sub=sub)
    ),
    "alg none without kid": lambda key, sub, token, refresh: unsigned(
        {"alg": "none"}, claims(sub=sub)
    ),
    "HS256 keyed with the raw public key": lambda key, sub, token, refresh: hs256(
        raw_public(key), {"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims(sub=sub)
    ),
    "HS256 keyed with the public key PEM": lambda key, sub, token, refresh: hs256(
        public_pem(key), {"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims(sub=sub)
    ),
    "expired": lambda key, sub, token, refresh: sign(
        key, claims(sub=sub, iat=int(time.time()) - 4000, exp=int(time.time()) - 3000)
    ),
    "wrong audience": lambda key, sub, token, refresh: sign(key, claims(sub=sub, aud="other")),
    "wrong issuer": lambda key, sub, token, refresh: sign(key, claims(sub=sub, iss="evil")),
    "missing exp": lambda key, sub, token, refresh: sign(key, claims(sub=sub, exp=None)),
    "missing iat": lambda key, sub, token, refresh: sign(key, claims(sub=sub, iat=None)),
    "missing sub": lambda key, sub, token, refresh: sign(key, claims(sub=None)),
    "tampered signature": lambda key, sub, token, refresh: tamper_signature(token),
    "tampered payload": lambda key, sub, token, refresh: tamper_payload(token, roles=["admin"]),
    "signed by a foreign key": lambda key, sub, token, refresh: sign(new_key(), claims(sub=sub)),
    "foreign key claiming our kid": lambda key, sub, token, refresh: jwt.encode(
        claims(sub=sub), new_key().private, algorithm="EdDSA", headers={"kid": key.kid}
    ),
    "refresh token as access token": lambda key, sub, token, refresh: refresh,
    "garbage": lambda key, sub, token, refresh: "garbage",
    "three garbage segments": lambda key, sub, token, refresh: "a.b.c",
}


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_forged_access_tokens_are_unauthenticated(
    stub: Stub, key: SigningKey, user_pair: tuple[users_pb2.User, users_pb2.TokenPair]
) -> None:
    """Every forgery, on a user method and an admin method (one service for all cases)."""
    user, pair = user_pair
    codes = {}
    for name, forge in FORGERIES.items():
        token = forge(key, user.id, pair.access_token, pair.refresh_token)
        assert token != pair.access_token
        codes[name] = (
            await code_of(stub.GetMe(users_pb2.GetMeRequest(), metadata=bearer(token))),
            await code_of(stub.ListUsers(users_pb2.ListUsersRequest(), metadata=bearer(token))),
        )
    unauthenticated = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED)
    assert codes == dict.fromkeys(FORGERIES, unauthenticated)


async def test_missing_or_malformed_authorization_is_unauthenticated(stub: Stub) -> None:
    values = [None, "", "Bearer", "Bearer ", "garbage", "Basic dXNlcjpwYXNzd29yZA==", "Bearer a b"]
    codes = {}
    for value in values:
        metadata = None if value is None else (("authorization", value),)
        codes[value] = await code_of(stub.GetMe(users_pb2.GetMeRequest(), metadata=metadata))
    assert codes == dict.fromkeys(values, grpc.StatusCode.UNAUTHENTICATED)


async def test_a_self_signed_admin_role_does_not_open_admin_methods(
    stub: Stub, user_pair: tuple[users_pb2.User, users_pb2.TokenPair]
) -> None:
    user, _ = user_pair
    forged = sign(new_key(), claims(sub=user.id, roles=["user", "admin"]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUser(users_pb2.GetUserRequest(id=user.id), metadata=bearer(forged))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


AdminCall = Callable[[Stub, str, str], Awaitable[object]]
ADMIN_CALLS: dict[str, AdminCall] = {
    "GetUser own id": lambda stub, token, other: stub.GetUser(
        users_pb2.GetUserRequest(id=jwt.decode(token, options={"verify_signature": False})["sub"]),
        metadata=bearer(token),
    ),
    "GetUser another id": lambda stub, token, other: stub.GetUser(
        users_pb2.GetUserRequest(id=other), metadata=bearer(token)
    ),
    "ListUsers": lambda stub, token, other: stub.ListUsers(
        users_pb2.ListUsersRequest(), metadata=bearer(token)
    ),
}


@pytest.mark.parametrize("call", ADMIN_CALLS)
async def test_a_normal_user_is_denied_admin_methods_without_data(
    stub: Stub, user_pair: tuple[users_pb2.User, users_pb2.TokenPair], call: str
) -> None:
    other = await register(stub, "other@example.org")
    _, pair = user_pair
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ADMIN_CALLS[call](stub, pair.access_token, other.id)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert other.email not in (caught.value.details() or "")
    assert other.id not in str(caught.value.trailing_metadata())


@pytest.mark.parametrize("call", ADMIN_CALLS)
async def test_an_admin_may_call_admin_methods(
    stub: Stub, users: RunningService, call: str
) -> None:
    other = await register(stub, "other@example.org")
    await register(stub, "root@example.org")
    await grant_admin(users.stores, "root@example.org")
    pair = await login(stub, "root@example.org")
    await ADMIN_CALLS[call](stub, pair.access_token, other.id)


async def test_a_revoked_admin_role_in_an_old_token_is_still_checked_per_token(
    stub: Stub, users: RunningService
) -> None:
    """The interceptor trusts only the token's roles: a user token never gains admin."""
    await register(stub, "later@example.org")
    before = await login(stub, "later@example.org")
    await grant_admin(users.stores, "later@example.org")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListUsers(users_pb2.ListUsersRequest(), metadata=bearer(before.access_token))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    after = await stub.Refresh(users_pb2.RefreshRequest(refresh_token=before.refresh_token))
    await stub.ListUsers(users_pb2.ListUsersRequest(), metadata=bearer(after.access_token))


# --- signing keys ----------------------------------------------------------------------


async def get_me(stub: Stub, token: str) -> users_pb2.User:
    return await stub.GetMe(users_pb2.GetMeRequest(), metadata=bearer(token))


async def test_key_rotation_keeps_both_keys_valid_and_publishes_both(stores: StoreUrls) -> None:
    old, new = new_key(), new_key()
    async with running_users(users_settings(stores, [old])) as running:
        async with users_stub(running.address) as stub:
            await register(stub, "rot@example.org")
            by_old = (await login(stub, "rot@example.org")).access_token
            jwks = await stub.GetJwks(users_pb2.GetJwksRequest())
        assert [k.kid for k in jwks.keys] == [old.kid]

    async with running_users(users_settings(stores, [old, new])) as running:
        async with users_stub(running.address) as stub:
            by_new = (await login(stub, "rot@example.org")).access_token
            assert jwt.get_unverified_header(by_new)["kid"] == new.kid  # the last key signs
            assert (await get_me(stub, by_old)).email == "rot@example.org"
            assert (await get_me(stub, by_new)).email == "rot@example.org"
            jwks = await stub.GetJwks(users_pb2.GetJwksRequest())
        assert [k.kid for k in jwks.keys] == [old.kid, new.kid]
        for jwk in jwks.keys:
            assert (jwk.kty, jwk.crv, jwk.alg, jwk.use) == ("OKP", "Ed25519", "EdDSA", "sig")
        assert jwks.keys[1].x == b64(raw_public(new))

    # The old key retired: its tokens stop verifying.
    async with (
        running_users(users_settings(stores, [new])) as running,
        users_stub(running.address) as stub,
    ):
        assert (await get_me(stub, by_new)).email == "rot@example.org"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get_me(stub, by_old)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    await clear_redis(stores)


async def test_keys_are_generated_into_the_directory_once(
    stores: StoreUrls, tmp_path: Path
) -> None:
    directory = tmp_path / "keys"
    settings = users_settings(stores, signing_keys=(), signing_keys_dir=directory)
    async with running_users(settings) as running, users_stub(running.address) as stub:
        await register(stub, "local@example.org")
        token = (await login(stub, "local@example.org")).access_token
    files = list(directory.glob("*.pem"))
    assert len(files) == 1
    assert files[0].stat().st_mode & 0o077 == 0
    async with running_users(settings) as running, users_stub(running.address) as stub:
        assert (await get_me(stub, token)).email == "local@example.org"  # same key reused
    assert list(directory.glob("*.pem")) == files
    await clear_redis(stores)
