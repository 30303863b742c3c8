"""Issuing and verifying EdDSA (Ed25519) JWT access tokens.

Verification allow-lists the algorithm (EdDSA only: `alg: none` and HS256 confusion fail),
requires `exp`, `iat`, `sub`, `aud`, `iss`, `jti` and a `kid` header, and checks `roles`.
A `kid` the verifier does not know makes it refetch the JWK Set, at most once per
`refetch_interval` seconds. Verified tokens are cached by the SHA-256 of the token until
they expire, so a hot token costs one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mesh.auth.identity import Caller
from mesh.auth.keys import ALGORITHM, SigningKey, public_key_from_jwk
from mesh.settings import Env

ACCESS_TOKEN_SECONDS = 15 * 60
TOKEN_TYPE = "at+jwt"  # RFC 9068
JwksFetcher = Callable[[], Awaitable[Sequence[dict[str, Any]]]]


class InvalidToken(Exception):
    """The token cannot be trusted; the message says why (safe to show the client)."""


@dataclass(frozen=True, slots=True)
class TokenSettings:
    issuer: str = "the-mesh"
    audience: str = "mesh-api"
    ttl_seconds: int = ACCESS_TOKEN_SECONDS
    leeway_seconds: int = 30

    @classmethod
    def from_env(cls, env: Env) -> TokenSettings:
        return cls(
            issuer=env.str("MESH_AUTH_ISSUER", "the-mesh"),
            audience=env.str("MESH_AUTH_AUDIENCE", "mesh-api"),
        )


class TokenIssuer:
    def __init__(self, keys: Sequence[SigningKey], settings: TokenSettings) -> None:
        if not keys:
            raise ValueError("no signing key")
        self._signing = keys[-1]
        self._settings = settings

    def issue(self, user_id: str, roles: Sequence[str], now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": user_id,
            "iat": issued,
            "exp": issued + self._settings.ttl_seconds,
            "jti": uuid.uuid4().hex,
            "roles": list(roles),
        }
        return jwt.encode(
            claims,
            self._signing.private,
            algorithm=ALGORITHM,
            headers={"kid": self._signing.kid, "typ": TOKEN_TYPE},
        )


class TokenVerifier:
    def __init__(
        self,
        fetch_jwks: JwksFetcher,
        settings: TokenSettings,
        *,
        refetch_interval: float = 30.0,
        cache_size: int = 10_000,
    ) -> None:
        self._fetch_jwks = fetch_jwks
        self._settings = settings
        self._refetch_interval = refetch_interval
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._last_fetch = -float("inf")
        self._fetch_lock = asyncio.Lock()
        self._cache: OrderedDict[bytes, tuple[Caller, float]] = OrderedDict()
        self._cache_size = cache_size

    async def verify(self, token: str) -> Caller:
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            caller, expires = cached
            if time.time() < expires:
                return caller
            del self._cache[digest]
        caller, expires = await self._verify_uncached(token)
        if self._cache_size:
            self._cache[digest] = (caller, expires)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return caller

    async def _verify_uncached(self, token: str) -> tuple[Caller, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("token algorithm is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token has no key id")
        key = await self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_seconds,
                options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token has expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"token is not valid: {exc}") from None
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidToken("token roles are malformed")
        if not isinstance(claims["sub"], str):
            raise InvalidToken("token subject is malformed")
        return Caller(claims["sub"], tuple(roles), str(claims["jti"])), float(claims["exp"])

    async def _key(self, kid: str) -> Ed25519PublicKey:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._fetch_lock:
            if kid not in self._keys and (
                time.monotonic() - self._last_fetch >= self._refetch_interval
            ):
                self._last_fetch = time.monotonic()
                await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            raise InvalidToken("token is signed by an unknown key")
        return key

    async def _refresh(self) -> None:
        try:
            jwks = await self._fetch_jwks()
        except Exception as exc:
            raise InvalidToken(f"cannot fetch the signing keys: {type(exc).__name__}") from None
        keys = {}
        for jwk in jwks:
            try:
                keys[str(jwk["kid"])] = public_key_from_jwk(jwk)
            except (KeyError, ValueError):
                continue
        self._keys = keys
