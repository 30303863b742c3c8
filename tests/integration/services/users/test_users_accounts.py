"""Account reads and changes: GetMe, UpdateMe, GetUser, ListUsers, `users grant-admin`."""

from __future__ import annotations

import asyncio
import base64
import io
import uuid

import grpc
import pytest

from mesh.backing_settings import StoreUrls
from mesh.settings import Env, Secret
from protos.users.v1 import users_pb2, users_pb2_grpc
from services.users.admin import grant_admin, grant_admin_command
from services.users.settings import UsersSettings
from tests.integration.services.conftest import RunningService
from tests.integration.services.users.support import (
    bearer,
    clear_redis,
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


@pytest.fixture
async def admin_token(stub: Stub, users: RunningService) -> str:
    await register(stub, "admin@example.org", display_name="Admin")
    await grant_admin(users.stores, "admin@example.org")
    return (await login(stub, "admin@example.org")).access_token


async def list_users(stub: Stub, token: str, **fields: object) -> users_pb2.ListUsersResponse:
    return await stub.ListUsers(users_pb2.ListUsersRequest(**fields), metadata=bearer(token))  # type: ignore[arg-type]


async def invalid_fields(call: object) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return fields_of(caught.value)


# --- the caller's own account ----------------------------------------------------------


async def test_get_me_and_update_me_change_only_the_display_name(
    stub: Stub, users: RunningService
) -> None:
    user = await register(stub, "me@example.org", display_name="Me")
    await register(stub, "bystander@example.org", display_name="Bystander")
    token = (await login(stub, "me@example.org")).access_token
    assert await stub.GetMe(users_pb2.GetMeRequest(), metadata=bearer(token)) == user

    updated = await stub.UpdateMe(
        users_pb2.UpdateMeRequest(display_name="  New Name "), metadata=bearer(token)
    )
    assert updated.display_name == "New Name"
    assert (updated.id, updated.email, list(updated.roles)) == (user.id, user.email, ["user"])
    assert updated.created_at == user.created_at
    assert await stub.GetMe(users_pb2.GetMeRequest(), metadata=bearer(token)) == updated
    async with users_db(users.stores) as db:
        names = await db.fetch("SELECT email, display_name FROM users ORDER BY email")
    assert [tuple(r) for r in names] == [
        ("bystander@example.org", "Bystander"),
        ("me@example.org", "New Name"),
    ]


async def test_update_me_rejects_a_bad_display_name(stub: Stub) -> None:
    await register(stub, "me@example.org")
    token = (await login(stub, "me@example.org")).access_token
    names = ["", "   ", "x" * 101]
    rejected = {}
    for name in names:
        request = users_pb2.UpdateMeRequest(display_name=name)
        rejected[name] = await invalid_fields(stub.UpdateMe(request, metadata=bearer(token)))
    assert rejected == {key: ["displayName"] for key in names}


async def test_update_me_accepts_100_characters(stub: Stub) -> None:
    await register(stub, "me@example.org")
    token = (await login(stub, "me@example.org")).access_token
    request = users_pb2.UpdateMeRequest(display_name="y" * 100)
    assert (await stub.UpdateMe(request, metadata=bearer(token))).display_name == "y" * 100


async def test_get_me_of_a_deleted_account_is_not_found(stub: Stub, users: RunningService) -> None:
    await register(stub, "gone@example.org")
    token = (await login(stub, "gone@example.org")).access_token
    async with users_db(users.stores) as db:
        await db.execute("DELETE FROM users")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetMe(users_pb2.GetMeRequest(), metadata=bearer(token))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


# --- admin reads -----------------------------------------------------------------------


async def test_get_user_by_id(stub: Stub, admin_token: str) -> None:
    user = await register(stub, "someone@example.org")
    got = await stub.GetUser(users_pb2.GetUserRequest(id=user.id), metadata=bearer(admin_token))
    assert got == user
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUser(
            users_pb2.GetUserRequest(id=str(uuid.uuid4())), metadata=bearer(admin_token)
        )
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    bad = stub.GetUser(users_pb2.GetUserRequest(id="not-a-uuid"), metadata=bearer(admin_token))
    assert await invalid_fields(bad) == ["id"]


async def test_list_users_walks_every_user_once_while_users_are_added(
    stub: Stub, admin_token: str
) -> None:
    for i in range(23):
        await register(stub, f"u{i:02d}@example.org")
    first = await list_users(stub, admin_token, page_size=7)
    seen = [u.email for u in first.users]
    assert len(seen) == 7
    token = first.next_page_token
    added = 0
    while token:
        if added < 6:  # new accounts arrive while the client pages
            await register(stub, f"late{added}@example.org")
            added += 1
        page = await list_users(stub, admin_token, page_size=7, page_token=token)
        assert len(page.users) <= 7
        seen += [u.email for u in page.users]
        token = page.next_page_token
    expected = ["admin@example.org"] + [f"u{i:02d}@example.org" for i in range(23)]
    expected += [f"late{i}@example.org" for i in range(added)]
    assert seen == expected  # oldest first, each exactly once, the late ones at the end


async def test_list_users_pages_by_20_by_default_and_up_to_100(
    stub: Stub, users: RunningService, admin_token: str
) -> None:
    async with users_db(users.stores) as db:
        await db.executemany(
            "INSERT INTO users (id, email, display_name, password_hash, created_at)"
            " VALUES ($1, $2, 'Bulk', 'x', now() + make_interval(secs => $3))",
            [(uuid.uuid4(), f"bulk{i:03d}@example.org", float(i)) for i in range(120)],
        )
    default = await list_users(stub, admin_token)
    assert len(default.users) == 20
    assert default.next_page_token
    biggest = await list_users(stub, admin_token, page_size=100)
    assert len(biggest.users) == 100
    rest = await list_users(stub, admin_token, page_size=100, page_token=biggest.next_page_token)
    assert len(rest.users) == 21
    assert rest.next_page_token == ""


async def test_a_last_page_that_is_exactly_full_has_no_next_token(
    stub: Stub, admin_token: str
) -> None:
    await register(stub, "second@example.org")
    page = await list_users(stub, admin_token, page_size=2)
    assert [u.email for u in page.users] == ["admin@example.org", "second@example.org"]
    assert page.next_page_token == ""


async def test_list_users_rejects_a_page_size_out_of_range(stub: Stub, admin_token: str) -> None:
    sizes = [0, -1, 101, 1_000_000]
    rejected = {n: await invalid_fields(list_users(stub, admin_token, page_size=n)) for n in sizes}
    assert rejected == {key: ["pageSize"] for key in sizes}
    assert len((await list_users(stub, admin_token, page_size=1)).users) == 1


def flip(token: str, position: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[position] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


async def test_tampered_or_foreign_page_tokens_are_rejected(
    stub: Stub, admin_token: str, stores: StoreUrls
) -> None:
    for i in range(3):
        await register(stub, f"p{i}@example.org")
    token = (await list_users(stub, admin_token, page_size=1)).next_page_token
    assert token
    await list_users(stub, admin_token, page_size=1, page_token=token)  # the genuine one works
    foreign = base64.urlsafe_b64encode(b"\x01" + bytes(40)).rstrip(b"=").decode()
    tampered = {
        "timestamp byte": flip(token, 8),
        "id byte": flip(token, 12),
        "tag byte": flip(token, 30),
        "version byte": flip(token, 0),
        "truncated": token[:-4],
        "extended": token + "AAAA",
        "not base64": "%%%%",
        "forged without the key": foreign,
    }
    for name, bad in tampered.items():
        fields = await invalid_fields(list_users(stub, admin_token, page_size=1, page_token=bad))
        assert fields == ["pageToken"], name


async def test_page_tokens_of_another_deployment_are_foreign(stores: StoreUrls) -> None:
    """Keyed by the signing key unless a shared secret is set: then any key works."""
    secret = Secret("s" * 40)
    key_a, key_b = new_key(), new_key()

    async def first_page_token(settings: UsersSettings, page_token: str = "") -> str:
        async with running_users(settings) as running, users_stub(running.address) as stub:
            admin = (await login(stub, "a1@example.org")).access_token
            page = await list_users(stub, admin, page_size=1, page_token=page_token)
            return page.next_page_token

    async with (
        running_users(users_settings(stores, [key_a])) as running,
        users_stub(running.address) as stub,
    ):
        for i in (1, 2, 3):
            await register(stub, f"a{i}@example.org")
    await grant_admin(stores, "a1@example.org")

    by_a = await first_page_token(users_settings(stores, [key_a]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await first_page_token(users_settings(stores, [key_b]), by_a)
    assert fields_of(caught.value) == ["pageToken"]
    # With the same key, or the same shared secret, a token works across restarts.
    assert await first_page_token(users_settings(stores, [key_a]), by_a)
    shared = await first_page_token(users_settings(stores, [key_a], page_token_secret=secret))
    assert await first_page_token(users_settings(stores, [key_b], page_token_secret=secret), shared)
    await clear_redis(stores)


# --- users grant-admin -----------------------------------------------------------------


def command_stores(stores: StoreUrls) -> StoreUrls:
    """What `mesh` resolves from MESH_POSTGRES_DSN and MESH_NAMESPACE."""
    env = Env({"MESH_POSTGRES_DSN": stores.postgres_dsn, "MESH_NAMESPACE": stores.namespace})
    return StoreUrls.from_env(env)


async def test_grant_admin_command_is_idempotent_and_names_an_unknown_email(
    stub: Stub, users: RunningService
) -> None:
    await register(stub, "ops@example.org")
    command = command_stores(users.stores)

    def run(email: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = grant_admin_command(email, command, out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    code, out, err = await asyncio.to_thread(run, " OPS@example.org")
    assert (code, err) == (0, "")
    assert out.startswith("granted admin to ops@example.org")
    code, out, err = await asyncio.to_thread(run, "ops@example.org")
    assert (code, err) == (0, "")
    assert "already an admin" in out
    async with users_db(users.stores) as db:
        assert await db.fetchval("SELECT roles FROM users") == ["user", "admin"]

    code, out, err = await asyncio.to_thread(run, "nobody@example.org")
    assert (code, out) == (1, "")
    assert "no account with email 'nobody@example.org'" in err

    # The new role is in the next access token.
    token = (await login(stub, "ops@example.org")).access_token
    me = await stub.GetMe(users_pb2.GetMeRequest(), metadata=bearer(token))
    assert list(me.roles) == ["user", "admin"]
    await list_users(stub, token)


async def test_grant_admin_command_names_an_unmigrated_database(stores: StoreUrls) -> None:
    env = Env({"MESH_POSTGRES_DSN": stores.postgres_dsn, "MESH_NAMESPACE": "tnotthere_"})
    err = io.StringIO()
    code = await asyncio.to_thread(
        grant_admin_command, "x@example.org", StoreUrls.from_env(env), out=io.StringIO(), err=err
    )
    assert code == 1
    assert "MESH_POSTGRES_DSN" in err.getvalue()
