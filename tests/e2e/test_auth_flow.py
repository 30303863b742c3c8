"""Users and authentication end to end through the gateway (issue 3's contract)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from pymongo import AsyncMongoClient

from mesh.auth.keys import load_or_create_keys
from mesh.harness import BackingUrls
from tests.e2e.client import PASSWORD, call, log_in, mesh_cli, new_account
from tests.e2e.mesh_process import MeshProcess


async def sign_up(mesh: MeshProcess, http: aiohttp.ClientSession) -> tuple[str, dict[str, Any]]:
    account = await new_account(mesh, http)
    return account.email, {**account.tokens, "user": account.user}


async def test_register_login_me_and_update(mesh: MeshProcess, http: aiohttp.ClientSession) -> None:
    _, session = await sign_up(mesh, http)
    assert session["tokenType"] == "Bearer"
    assert session["expiresIn"] == 900
    token = session["accessToken"]
    status, _, me = await call(http, "GET", f"{mesh.gateway}/api/v1/users/me", token)
    assert status == 200
    assert me["id"] == session["user"]["id"]
    status, _, me = await call(
        http, "PATCH", f"{mesh.gateway}/api/v1/users/me", token, json={"displayName": "Renamed"}
    )
    assert (status, me["displayName"]) == (200, "Renamed")
    for field, value in (("roles", ["admin"]), ("id", "x"), ("email", "e@x.org")):
        status, _, problem = await call(
            http,
            "PATCH",
            f"{mesh.gateway}/api/v1/users/me",
            token,
            json={"displayName": "X", field: value},
        )
        assert status == 400
        assert [e["field"] for e in problem["errors"]] == [field]
    status, _, me = await call(http, "GET", f"{mesh.gateway}/api/v1/users/me", token)
    assert me["roles"] == ["user"]
    assert me["displayName"] == "Renamed"


async def test_wrong_password_and_unknown_email_are_the_same_401(
    mesh: MeshProcess, http: aiohttp.ClientSession
) -> None:
    email, _ = await sign_up(mesh, http)
    answers = []
    for body in (
        {"email": email, "password": "not the password!"},
        {"email": f"nobody-{uuid.uuid4().hex}@example.org", "password": PASSWORD},
    ):
        status, headers, problem = await call(
            http, "POST", f"{mesh.gateway}/api/v1/auth/login", json=body
        )
        answers.append(
            (status, headers.get("WWW-Authenticate"), problem["title"], problem["detail"])
        )
    assert answers[0] == answers[1]
    assert answers[0][0] == 401


async def test_refresh_rotation_and_reuse_revokes_the_family(
    mesh: MeshProcess, http: aiohttp.ClientSession
) -> None:
    _, session = await sign_up(mesh, http)
    refresh = f"{mesh.gateway}/api/v1/auth/refresh"
    status, _, second = await call(
        http, "POST", refresh, json={"refreshToken": session["refreshToken"]}
    )
    assert status == 200
    assert second["refreshToken"] != session["refreshToken"]
    status, _, third = await call(
        http, "POST", refresh, json={"refreshToken": second["refreshToken"]}
    )
    assert status == 200
    # The first token again: spent, so the whole family goes, the newest token included.
    status, headers, _ = await call(
        http, "POST", refresh, json={"refreshToken": session["refreshToken"]}
    )
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await call(http, "POST", refresh, json={"refreshToken": third["refreshToken"]})
    assert status == 401


async def test_logout_revokes_the_family(mesh: MeshProcess, http: aiohttp.ClientSession) -> None:
    _, session = await sign_up(mesh, http)
    status, _, _ = await call(
        http,
        "POST",
        f"{mesh.gateway}/api/v1/auth/logout",
        json={"refreshToken": session["refreshToken"]},
    )
    assert status == 200
    status, _, _ = await call(
        http,
        "POST",
        f"{mesh.gateway}/api/v1/auth/refresh",
        json={"refreshToken": session["refreshToken"]},
    )
    assert status == 401


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forgeries(keys_dir: Path, user_id: str, refresh_token: str) -> dict[str, str]:
    key = load_or_create_keys(keys_dir)[-1]
    now = int(time.time())
    good = {
        "iss": "the-mesh",
        "aud": "mesh-api",
        "sub": user_id,
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "roles": ["user", "admin"],
    }

    def signed(**changes: Any) -> str:
        body = {k: v for k, v in {**good, **changes}.items() if v is not None}
        return jwt.encode(body, key.private, algorithm="EdDSA", headers={"kid": key.kid})

    public_pem = key.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_input = f"{b64(orjson.dumps({'alg': 'HS256', 'kid': key.kid}))}.{b64(orjson.dumps(good))}"
    hs_mac = hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest()
    head, payload, signature = signed().split(".")
    return {
        "alg none": f"{b64(orjson.dumps({'alg': 'none', 'kid': key.kid}))}."
        f"{b64(orjson.dumps(good))}.",
        "HS256 signed with the public key": f"{hs_input}.{b64(hs_mac)}",
        "expired": signed(iat=now - 7200, exp=now - 3600),
        "wrong audience": signed(aud="another-api"),
        "wrong issuer": signed(iss="someone-else"),
        "missing exp": signed(exp=None),
        "tampered signature": f"{head}.{payload}.{signature[:-6]}AAAAAA",
        "refresh token as access token": refresh_token,
        "garbage": "garbage",
    }


async def test_forged_tokens_are_401_with_www_authenticate(
    mesh: MeshProcess, http: aiohttp.ClientSession
) -> None:
    _, session = await sign_up(mesh, http)
    keys_dir = Path(mesh.env["MESH_DATA_DIR"]) / "keys"
    for case, token in forgeries(keys_dir, session["user"]["id"], session["refreshToken"]).items():
        for url in (f"{mesh.gateway}/api/v1/users/me", f"{mesh.gateway}/api/v1/users"):
            status, headers, problem = await call(http, "GET", url, token)
            assert status == 401, (case, url, problem)
            assert headers["WWW-Authenticate"].startswith("Bearer"), case
            assert problem["status"] == 401
    for header in ("", "Bearer", "Basic dXNlcjpwYXNz", "Bearer a b c"):
        status, headers, _ = await call(
            http, "GET", f"{mesh.gateway}/api/v1/users/me", headers={"Authorization": header}
        )
        assert status == 401, header
        assert headers["WWW-Authenticate"].startswith("Bearer")


async def test_admin_routes(mesh: MeshProcess, http: aiohttp.ClientSession) -> None:
    user_email, user = await sign_up(mesh, http)
    admin_email, _ = await sign_up(mesh, http)
    other_id = user["user"]["id"]
    for url in (f"{mesh.gateway}/api/v1/users", f"{mesh.gateway}/api/v1/users/{other_id}"):
        status, _, problem = await call(http, "GET", url, user["accessToken"])
        assert status == 403, problem
        assert "email" not in str(problem)
    code, err = await mesh_cli(mesh, "users", "grant-admin", admin_email)
    assert code == 0, err
    _, admin = await sign_up_again(mesh, http, admin_email)
    status, _, found = await call(
        http, "GET", f"{mesh.gateway}/api/v1/users/{other_id}", admin["accessToken"]
    )
    assert (status, found["email"]) == (200, user_email)
    status, _, page = await call(
        http, "GET", f"{mesh.gateway}/api/v1/users?pageSize=1", admin["accessToken"]
    )
    assert status == 200
    assert len(page["users"]) == 1
    assert page["nextPageToken"]
    for size in ("0", "101", "-1"):
        status, _, problem = await call(
            http, "GET", f"{mesh.gateway}/api/v1/users?pageSize={size}", admin["accessToken"]
        )
        assert status == 400, size
        assert [e["field"] for e in problem["errors"]] == ["pageSize"]
    status, _, _ = await call(
        http, "GET", f"{mesh.gateway}/api/v1/users/{uuid.uuid4()}", admin["accessToken"]
    )
    assert status == 404
    code, err = await mesh_cli(mesh, "users", "grant-admin", "nobody@example.org")
    assert code != 0
    assert "nobody@example.org" in err


async def sign_up_again(
    mesh: MeshProcess, http: aiohttp.ClientSession, email: str
) -> tuple[str, dict[str, Any]]:
    return email, await log_in(http, mesh.gateway, email)


async def test_jwks_is_published(mesh: MeshProcess, http: aiohttp.ClientSession) -> None:
    status, _, jwks = await call(http, "GET", f"{mesh.gateway}/.well-known/jwks.json")
    assert status == 200
    key = load_or_create_keys(Path(mesh.env["MESH_DATA_DIR"]) / "keys")[-1]
    assert [(k["kty"], k["crv"], k["kid"], k["alg"]) for k in jwks["keys"]] == [
        ("OKP", "Ed25519", key.kid, "EdDSA")
    ]
    assert "d" not in jwks["keys"][0]  # never the private part


async def test_login_attempts_are_limited(mesh: MeshProcess, http: aiohttp.ClientSession) -> None:
    email, _ = await sign_up(mesh, http)
    statuses = []
    for _ in range(11):
        status, headers, _ = await call(
            http,
            "POST",
            f"{mesh.gateway}/api/v1/auth/login",
            json={"email": email, "password": "wrong password!!"},
        )
        statuses.append(status)
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    assert int(headers["Retry-After"]) > 0


async def test_analytics_takes_the_user_from_the_token(
    mesh: MeshProcess, backing: BackingUrls, http: aiohttp.ClientSession
) -> None:
    _, session = await sign_up(mesh, http)
    event = {
        "eventId": str(uuid.uuid4()),
        "type": "page.view",
        "timestamp": "2026-11-20T08:00:00Z",
        "userId": "someone-else",
    }
    url = f"{mesh.gateway}/api/v1/analytics/events:batch"
    status, _, problem = await call(http, "POST", url, json={"events": [event]})
    assert status == 401  # signed-in users only
    status, _, problem = await call(
        http, "POST", url, session["accessToken"], json={"events": [event]}
    )
    assert status == 400  # userId is not a client field at all
    assert [e["field"] for e in problem["errors"]] == ["events[0].userId"]
    del event["userId"]
    status, _, reply = await call(
        http,
        "POST",
        url,
        session["accessToken"],
        json={"events": [event, {**event, "eventId": "nope"}]},
    )
    assert status == 200, reply
    assert (reply["accepted"], reply["duplicates"]) == (1, 0)
    assert [r["index"] for r in reply["rejected"]] == [1]
    client: AsyncMongoClient[Any] = AsyncMongoClient(backing.mongo_url)
    try:
        stored = await client[f"{mesh.namespace}analytics"]["events"].find_one(
            {"_id": event["eventId"]}
        )
    finally:
        await client.close()
    assert stored is not None
    assert stored["userId"] == session["user"]["id"]


async def test_a_registration_reaches_analytics_as_a_domain_event(
    mesh: MeshProcess, backing: BackingUrls, http: aiohttp.ClientSession
) -> None:
    _, session = await sign_up(mesh, http)
    user_id = session["user"]["id"]
    client: AsyncMongoClient[Any] = AsyncMongoClient(backing.mongo_url)
    try:
        events = client[f"{mesh.namespace}analytics"]["service_events"]
        for _ in range(100):  # outbox relay → Redis Stream → analytics consumer
            stored = await events.find_one({"type": "user.registered", "userId": user_id})
            if stored is not None:
                break
            await asyncio.sleep(0.1)
    finally:
        await client.close()
    assert stored is not None, "user.registered never reached analytics"
