"""Login, refresh-token rotation and logout over real gRPC, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
import uuid
from datetime import timedelta

import grpc
import jwt
import pytest
import redis.asyncio as aioredis

from mesh.auth.keys import SigningKey
from mesh.backing_settings import StoreUrls
from mesh.errors import ResourceExhausted
from mesh.harness import BackingUrls
from protos.users.v1 import users_pb2, users_pb2_grpc
from services.users.admin import grant_admin
from services.users.throttle import RedisLoginThrottle
from tests.integration.services.conftest import RunningService
from tests.integration.services.users.support import (
    AUDIENCE,
    ISSUER,
    PASSWORD,
    clear_redis,
    error_details,
    fields_of,
    login,
    new_key,
    register,
    running_users,
    users_db,
    users_settings,
    users_stub,
)

Stub = users_pb2_grpc.UsersServiceStub


async def refresh(stub: Stub, token: str) -> users_pb2.TokenPair:
    return await stub.Refresh(users_pb2.RefreshRequest(refresh_token=token))


async def assert_unauthenticated(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED, caught.value.details()
    return caught.value


# --- login -----------------------------------------------------------------------------


async def test_login_returns_a_bearer_pair_with_an_eddsa_access_token(
    stub: Stub, key: SigningKey, users: RunningService
) -> None:
    user = await register(stub, "ada@example.org")
    pair = await login(stub, " ADA@example.org ")
    assert pair.token_type == "Bearer"
    assert pair.expires_in == 900
    header = jwt.get_unverified_header(pair.access_token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == key.kid
    claims = jwt.decode(
        pair.access_token, key.public, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER
    )
    assert claims["sub"] == user.id
    assert claims["roles"] == ["user"]
    assert claims["exp"] - claims["iat"] == 900
    assert {"jti", "iat", "exp"} <= claims.keys()
    # The refresh token: 256 random bits, stored only as its SHA-256, valid for 30 days.
    assert len(pair.refresh_token) == 43
    async with users_db(users.stores) as db:
        rows = await db.fetch("SELECT token_hash, issued_at, expires_at FROM refresh_tokens")
    assert [bytes(r["token_hash"]) for r in rows] == [
        hashlib.sha256(pair.refresh_token.encode()).digest()
    ]
    assert rows[0]["expires_at"] - rows[0]["issued_at"] == timedelta(days=30)


async def test_wrong_password_and_unknown_email_get_the_same_answer(stub: Stub) -> None:
    await register(stub, "bo@example.org")
    wrong = await assert_unauthenticated(login(stub, "bo@example.org", "not the password!"))
    unknown = await assert_unauthenticated(login(stub, "nobody@example.org", PASSWORD))
    assert wrong.details() == unknown.details() == "the email or password is not correct"
    assert wrong.trailing_metadata() == unknown.trailing_metadata()


async def test_unknown_email_takes_as_long_as_a_wrong_password(stub: Stub) -> None:
    await register(stub, "timing@example.org")

    async def duration(email: str) -> float:
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError):
            await login(stub, email, "not the password!", address=email)
        return time.perf_counter() - started

    wrong = [await duration("timing@example.org") for _ in range(5)]
    unknown = [await duration(f"ghost{i}@example.org") for i in range(5)]
    # One argon2id verification (tens of ms) either way; skipping it would be ~1 ms.
    assert statistics.median(unknown) > 0.5 * statistics.median(wrong)
    assert statistics.median(unknown) > 0.005


@pytest.mark.parametrize(
    ("email", "password", "fields"),
    [
        ("", PASSWORD, ["email"]),
        ("a@example.org", "", ["password"]),
        ("", "", ["email", "password"]),
    ],
)
async def test_login_names_missing_fields(
    stub: Stub, email: str, password: str, fields: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(stub, email, password)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(caught.value) == fields


async def test_login_upgrades_a_hash_made_with_other_parameters(stores: StoreUrls) -> None:
    key = new_key()
    cheap = users_settings(stores, [key], argon2_time_cost=2)
    async with running_users(cheap) as running, users_stub(running.address) as stub:
        await register(stub, "old@example.org")
    async with users_db(stores) as db:
        before = await db.fetchval("SELECT password_hash FROM users")
    assert before.startswith("$argon2id$v=19$m=19456,t=2,p=1$")

    stronger = users_settings(stores, [key], argon2_time_cost=3, argon2_memory_kib=20 * 1024)
    async with running_users(stronger) as running, users_stub(running.address) as stub:
        with pytest.raises(grpc.aio.AioRpcError):  # a failed login changes nothing
            await login(stub, "old@example.org", "not the password!")
        async with users_db(stores) as db:
            assert await db.fetchval("SELECT password_hash FROM users") == before
        await login(stub, "old@example.org")
        async with users_db(stores) as db:
            after = await db.fetchval("SELECT password_hash FROM users")
        assert after.startswith("$argon2id$v=19$m=20480,t=3,p=1$")
        await login(stub, "old@example.org")  # the upgraded hash verifies
        async with users_db(stores) as db:
            assert await db.fetchval("SELECT password_hash FROM users") == after
    await clear_redis(stores)


# --- refresh and logout ----------------------------------------------------------------


async def test_refresh_rotates_and_a_spent_token_revokes_the_family(
    stub: Stub, users: RunningService
) -> None:
    await register(stub, "cy@example.org")
    first = await login(stub, "cy@example.org")
    second = await refresh(stub, first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert second.token_type == "Bearer"
    third = await refresh(stub, second.refresh_token)  # rotation continues

    await assert_unauthenticated(refresh(stub, first.refresh_token))  # reuse
    # ...revokes the whole family: the newest token stops working too.
    await assert_unauthenticated(refresh(stub, third.refresh_token))
    async with users_db(users.stores) as db:
        reasons = await db.fetch("SELECT revoked_reason FROM refresh_families")
    assert [r["revoked_reason"] for r in reasons] == ["reuse"]


async def test_reuse_revokes_only_that_family(stub: Stub) -> None:
    await register(stub, "di@example.org")
    laptop = await login(stub, "di@example.org")
    phone = await login(stub, "di@example.org")
    await refresh(stub, laptop.refresh_token)
    await assert_unauthenticated(refresh(stub, laptop.refresh_token))
    await refresh(stub, phone.refresh_token)  # another sign-in is unaffected


async def test_refresh_gives_the_current_roles(stub: Stub, users: RunningService) -> None:
    await register(stub, "boss@example.org")
    pair = await login(stub, "boss@example.org")
    await grant_admin(users.stores, "boss@example.org")
    renewed = await refresh(stub, pair.refresh_token)
    assert jwt.decode(renewed.access_token, options={"verify_signature": False})["roles"] == [
        "user",
        "admin",
    ]


async def test_concurrent_refreshes_with_one_token_give_one_pair_and_revoke_the_family(
    stub: Stub, users: RunningService
) -> None:
    await register(stub, "race@example.org")
    pair = await login(stub, "race@example.org")
    results = await asyncio.gather(
        *(refresh(stub, pair.refresh_token) for _ in range(6)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, users_pb2.TokenPair)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert [e.code() for e in losers] == [grpc.StatusCode.UNAUTHENTICATED] * 5
    await assert_unauthenticated(refresh(stub, winners[0].refresh_token))
    async with users_db(users.stores) as db:
        assert await db.fetchval("SELECT count(*) FROM refresh_families") == 1
        assert await db.fetchval("SELECT revoked_reason FROM refresh_families") == "reuse"


async def test_an_expired_refresh_token_is_unauthenticated(
    stub: Stub, users: RunningService
) -> None:
    await register(stub, "old@example.org")
    pair = await login(stub, "old@example.org")
    async with users_db(users.stores) as db:
        await db.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    await assert_unauthenticated(refresh(stub, pair.refresh_token))


async def test_a_refresh_token_just_before_expiry_still_works(
    stub: Stub, users: RunningService
) -> None:
    await register(stub, "edge@example.org")
    pair = await login(stub, "edge@example.org")
    async with users_db(users.stores) as db:
        await db.execute("UPDATE refresh_tokens SET expires_at = now() + interval '1 minute'")
    await refresh(stub, pair.refresh_token)


async def test_unknown_and_missing_refresh_tokens(stub: Stub) -> None:
    await assert_unauthenticated(refresh(stub, "A" * 43))
    await assert_unauthenticated(stub.Logout(users_pb2.LogoutRequest(refresh_token="not-a-token")))
    for call in (
        refresh(stub, ""),
        stub.Logout(users_pb2.LogoutRequest(refresh_token="")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert fields_of(caught.value) == ["refreshToken"]


async def test_logout_revokes_the_family(stub: Stub, users: RunningService) -> None:
    await register(stub, "eve@example.org")
    first = await login(stub, "eve@example.org")
    second = await refresh(stub, first.refresh_token)
    other = await login(stub, "eve@example.org")
    await stub.Logout(users_pb2.LogoutRequest(refresh_token=second.refresh_token))
    await assert_unauthenticated(refresh(stub, second.refresh_token))
    await stub.Logout(users_pb2.LogoutRequest(refresh_token=second.refresh_token))  # idempotent
    await refresh(stub, other.refresh_token)  # another sign-in stays
    async with users_db(users.stores) as db:
        reasons = await db.fetch("SELECT revoked_reason FROM refresh_families ORDER BY created_at")
    assert [r["revoked_reason"] for r in reasons] == ["logout", None]


# --- login throttling ------------------------------------------------------------------


async def assert_throttled(call: object) -> float:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    retry_after = error_details(caught.value).retry_after_seconds
    assert retry_after is not None
    return retry_after


async def test_failed_logins_are_limited_per_account(stub: Stub) -> None:
    await register(stub, "target@example.org")
    for i in range(10):  # from ten addresses: the account limit holds anyway
        await assert_unauthenticated(
            login(stub, "target@example.org", "wrong password!", address=f"203.0.113.{i}")
        )
    retry_after = await assert_throttled(login(stub, "target@example.org", address="192.0.2.99"))
    assert 880 <= retry_after <= 900
    # Another account from the same addresses is unaffected.
    await register(stub, "bystander@example.org")
    await login(stub, "bystander@example.org", address="203.0.113.1")


async def test_failed_logins_are_limited_per_client_address(stub: Stub) -> None:
    await register(stub, "victim@example.org")
    for i in range(10):  # ten different accounts (existing or not) from one address
        await assert_unauthenticated(
            login(stub, f"guess{i}@example.org", "wrong password!", address="203.0.113.7")
        )
    retry_after = await assert_throttled(login(stub, "victim@example.org", address="203.0.113.7"))
    assert 880 <= retry_after <= 900
    await login(stub, "victim@example.org", address="203.0.113.8")  # another address is fine


async def test_the_grpc_peer_is_the_address_without_the_gateway_header(stub: Stub) -> None:
    for i in range(10):
        await assert_unauthenticated(
            stub.Login(users_pb2.LoginRequest(email=f"p{i}@example.org", password="wrong pass!"))
        )
    await assert_throttled(
        stub.Login(users_pb2.LoginRequest(email="p99@example.org", password="wrong pass!"))
    )


async def test_successful_logins_do_not_count(stub: Stub) -> None:
    await register(stub, "regular@example.org")
    for _ in range(12):
        await login(stub, "regular@example.org", address="203.0.113.20")


async def test_a_successful_login_resets_the_account_counter(stub: Stub) -> None:
    await register(stub, "forgetful@example.org")
    for round_ in range(2):
        for i in range(9):
            await assert_unauthenticated(
                login(
                    stub, "forgetful@example.org", "wrong password!", address=f"10.{round_}.0.{i}"
                )
            )
        await login(stub, "forgetful@example.org", address=f"10.{round_}.1.1")


async def test_concurrent_guesses_cannot_overshoot_the_limit(stub: Stub) -> None:
    await register(stub, "burst@example.org")
    results = await asyncio.gather(
        *(
            login(stub, "burst@example.org", "wrong password!", address=f"198.18.0.{i}")
            for i in range(16)
        ),
        return_exceptions=True,
    )
    codes = sorted(r.code().name for r in results if isinstance(r, grpc.aio.AioRpcError))
    assert codes == ["RESOURCE_EXHAUSTED"] * 6 + ["UNAUTHENTICATED"] * 10


async def test_throttle_keys_are_namespaced_and_hold_no_email(
    stub: Stub, users: RunningService
) -> None:
    await assert_unauthenticated(login(stub, "private@example.org", "wrong password!"))
    client = aioredis.Redis.from_url(users.stores.redis_url, decode_responses=True)
    try:
        keys = [k async for k in client.scan_iter(match=f"{users.stores.namespace}users:login:*")]
        ttls = [await client.ttl(k) for k in keys]
    finally:
        await client.aclose()
    assert len(keys) == 2
    assert not any("private" in k for k in keys)
    assert all(890 <= t <= 900 for t in ttls)


async def test_the_window_ends_and_counting_starts_again(stores: StoreUrls) -> None:
    settings = users_settings(stores, login_max_attempts=2, login_window_seconds=1)
    async with running_users(settings) as running, users_stub(running.address) as stub:
        await register(stub, "patient@example.org")
        for _ in range(2):
            await assert_unauthenticated(login(stub, "patient@example.org", "wrong password!"))
        assert await assert_throttled(login(stub, "patient@example.org")) == 1.0
        await asyncio.sleep(1.1)
        await login(stub, "patient@example.org")
    await clear_redis(stores)


async def test_the_address_limit_is_separate_from_the_account_limit(backing: BackingUrls) -> None:
    client = aioredis.Redis.from_url(backing.redis_url)
    namespace = f"t{uuid.uuid4().hex[:8]}_"
    try:
        throttle = RedisLoginThrottle(
            client, namespace, limit=2, window_seconds=60, address_limit=5
        )
        for i in range(5):  # five accounts from one address: the address allows five
            await throttle.reserve(f"a{i}@example.org", "198.51.100.1")
        with pytest.raises(ResourceExhausted):
            await throttle.reserve("a9@example.org", "198.51.100.1")
        await throttle.reserve("b@example.org", "198.51.100.2")
        await throttle.reserve("b@example.org", "198.51.100.3")
        with pytest.raises(ResourceExhausted):  # the account allows two
            await throttle.reserve("b@example.org", "198.51.100.4")
    finally:
        await client.aclose()
