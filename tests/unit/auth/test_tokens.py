"""The shared access-token verifier against every forgery the users issue names."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.auth.access import ADMIN, PUBLIC, UNSPECIFIED, USER, authorize, bearer_token
from mesh.auth.keys import SigningKey, key_id, public_jwk
from mesh.auth.tokens import InvalidToken, TokenIssuer, TokenSettings, TokenVerifier
from mesh.errors import PermissionDenied, Unauthenticated

SETTINGS = TokenSettings(issuer="the-mesh", audience="mesh-api")


def new_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    return SigningKey(key_id(private.public_key()), private)


class Jwks:
    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0

    async def __call__(self) -> list[dict[str, Any]]:
        self.fetches += 1
        return [public_jwk(k) for k in self.keys]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    body = {
        "iss": "the-mesh",
        "aud": "mesh-api",
        "sub": "u1",
        "iat": now,
        "exp": now + 60,
        "jti": "j1",
        "roles": ["user"],
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def signed(key: SigningKey, body: dict[str, Any]) -> str:
    return jwt.encode(body, key.private, algorithm="EdDSA", headers={"kid": key.kid})


@pytest.fixture
def key() -> SigningKey:
    return new_key()


@pytest.fixture
def verifier(key: SigningKey) -> TokenVerifier:
    return TokenVerifier(Jwks(key), SETTINGS)


async def test_an_issued_token_verifies_to_its_caller(
    key: SigningKey, verifier: TokenVerifier
) -> None:
    token = TokenIssuer([key], SETTINGS).issue("user-7", ["user", "admin"])
    caller = await verifier.verify(token)
    assert (caller.user_id, caller.roles, caller.is_admin) == ("user-7", ("user", "admin"), True)
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"], header["typ"]) == ("EdDSA", key.kid, "at+jwt")
    body = jwt.decode(token, options={"verify_signature": False})
    assert body["exp"] - body["iat"] == 900
    assert set(body) == {"iss", "aud", "sub", "iat", "exp", "jti", "roles"}


def hs256(secret: bytes, kid: str, body: dict[str, Any]) -> str:
    """The classic confusion attack, made by hand (PyJWT itself refuses to make it)."""
    signing_input = (
        f"{b64(orjson.dumps({'alg': 'HS256', 'kid': kid, 'typ': 'JWT'}))}.{b64(orjson.dumps(body))}"
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def forged_tokens(key: SigningKey) -> dict[str, str]:
    public_pem = key.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header_none = b64(orjson.dumps({"alg": "none", "kid": key.kid, "typ": "JWT"}))
    good = signed(key, claims())
    head, payload, signature = good.split(".")
    tampered_payload = b64(orjson.dumps(claims(roles=["admin"])))
    return {
        "alg none": f"{header_none}.{b64(orjson.dumps(claims()))}.",
        "HS256 with the public key": hs256(public_pem, key.kid, claims()),
        "expired": signed(key, claims(iat=int(time.time()) - 4000, exp=int(time.time()) - 3000)),
        "wrong audience": signed(key, claims(aud="someone-else")),
        "wrong issuer": signed(key, claims(iss="evil")),
        "missing exp": signed(key, claims(exp=None)),
        "missing sub": signed(key, claims(sub=None)),
        "tampered payload": f"{head}.{tampered_payload}.{signature}",
        "tampered signature": f"{head}.{payload}.{signature[:-4]}AAAA",
        "other key with the same kid": jwt.encode(
            claims(), new_key().private, algorithm="EdDSA", headers={"kid": key.kid}
        ),
        "refresh token": "Zk3v2q0b8m1xVbQy1uX3z7W9cA4sT6eR2pL0oN8iK5g",
        "garbage": "not.a.token",
        "roles not a list": signed(key, claims(roles="admin")),
    }


@pytest.mark.parametrize("case", list(forged_tokens(new_key())))
async def test_forgeries_are_refused(case: str, key: SigningKey, verifier: TokenVerifier) -> None:
    token = forged_tokens(key)[case]
    with pytest.raises(InvalidToken):
        await verifier.verify(token)
    with pytest.raises(Unauthenticated):
        await authorize(USER, f"Bearer {token}", verifier)


async def test_unknown_kid_refetches_at_most_once_per_interval() -> None:
    old, new = new_key(), new_key()
    jwks = Jwks(old)
    verifier = TokenVerifier(jwks, SETTINGS, refetch_interval=0.3)
    await verifier.verify(signed(old, claims()))
    assert jwks.fetches == 1
    jwks.keys.append(new)  # rotation: the users service now publishes both keys
    for _ in range(3):  # unknown kids within the interval cost no fetch
        with pytest.raises(InvalidToken, match="unknown key"):
            await verifier.verify(signed(new_key(), claims()))
    assert jwks.fetches == 1
    await asyncio.sleep(0.35)
    assert (await verifier.verify(signed(new, claims(sub="n")))).user_id == "n"
    assert (await verifier.verify(signed(old, claims(sub="o")))).user_id == "o"
    assert jwks.fetches == 2
    with pytest.raises(InvalidToken, match="unknown key"):
        await verifier.verify(signed(new_key(), claims()))
    assert jwks.fetches == 2


async def test_verified_tokens_are_cached_until_they_expire(key: SigningKey) -> None:
    verifier = TokenVerifier(Jwks(key), SETTINGS)
    token = signed(key, claims())
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # served from the cache


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer a b", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_header_parsing(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


async def test_access_levels(key: SigningKey, verifier: TokenVerifier) -> None:
    user = f"Bearer {signed(key, claims())}"
    admin = f"Bearer {signed(key, claims(roles=['user', 'admin'], sub='a'))}"
    assert await authorize(PUBLIC, None, verifier) is None
    assert await authorize(PUBLIC, "Bearer junk", verifier) is None
    assert (await authorize(USER, user, verifier)).user_id == "u1"  # type: ignore[union-attr]
    assert (await authorize(ADMIN, admin, verifier)).user_id == "a"  # type: ignore[union-attr]
    with pytest.raises(Unauthenticated):
        await authorize(USER, None, verifier)
    with pytest.raises(Unauthenticated):
        await authorize(USER, "Token abc", verifier)
    with pytest.raises(PermissionDenied):
        await authorize(ADMIN, user, verifier)
    with pytest.raises(PermissionDenied):
        await authorize(UNSPECIFIED, admin, verifier)
