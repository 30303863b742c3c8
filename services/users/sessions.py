"""Signing in: login, refresh-token rotation with reuse detection, logout.

- Login answers a wrong password and an unknown email with the same error after the same
  work (an unknown email is verified against a dummy hash), and upgrades the stored hash
  when the argon2 parameters changed.
- A refresh token is 256 random bits, stored only as its SHA-256, valid for
  `refresh_ttl_seconds`, and spent on use; presenting a spent token revokes its family
  (every token of that sign-in, including the newest).
- Logout revokes the family of any of its tokens (spent or expired ones too); an unknown
  token is UNAUTHENTICATED.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from mesh.auth.tokens import TokenIssuer
from mesh.errors import FieldError, Unauthenticated, invalid
from services.users.passwords import Passwords
from services.users.refresh_store import Outcome, RefreshStore
from services.users.service import normalise_email
from services.users.store import UserStore
from services.users.throttle import LoginThrottle

BAD_CREDENTIALS: Final = "the email or password is not correct"
BAD_REFRESH_TOKEN: Final = "the refresh token is not valid; sign in again"
TOKEN_TYPE: Final = "Bearer"
REFRESH_TOKEN_BYTES: Final = 32
MAX_INPUT_CHARS: Final = 4096

log = logging.getLogger("services.users.sessions")


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = TOKEN_TYPE


def new_refresh_token() -> str:
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def refresh_token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SessionService:
    def __init__(
        self,
        users: UserStore,
        refresh_tokens: RefreshStore,
        passwords: Passwords,
        issuer: TokenIssuer,
        throttle: LoginThrottle,
        *,
        access_ttl_seconds: int,
        refresh_ttl_seconds: int,
    ) -> None:
        self._users = users
        self._refresh_tokens = refresh_tokens
        self._passwords = passwords
        self._issuer = issuer
        self._throttle = throttle
        self._access_ttl = access_ttl_seconds
        self._refresh_ttl = refresh_ttl_seconds

    async def login(self, email: str, password: str, client_address: str) -> TokenPair:
        email = normalise_email(email)
        problems: list[FieldError] = []
        if not email:
            problems.append(FieldError("email", "is required"))
        if not password:
            problems.append(FieldError("password", "is required"))
        if problems:
            raise invalid(problems)
        await self._throttle.reserve(email, client_address)
        # No account's email holds NUL (PostgreSQL text cannot): unknown without a lookup.
        credentials = None if "\x00" in email else await self._users.credentials(email)
        if credentials is None or len(password) > MAX_INPUT_CHARS:
            await self._passwords.verify_dummy(password[:MAX_INPUT_CHARS])
            raise Unauthenticated(BAD_CREDENTIALS)
        if not await self._passwords.verify(credentials.password_hash, password):
            raise Unauthenticated(BAD_CREDENTIALS)
        await self._throttle.succeeded(email, client_address)
        user = credentials.user
        if self._passwords.needs_rehash(credentials.password_hash):
            upgraded = await self._passwords.hash(password)
            if await self._users.replace_password_hash(
                user.id, credentials.password_hash, upgraded
            ):
                log.info("password hash upgraded", extra={"user_id": str(user.id)})
        refresh_token = new_refresh_token()
        await self._refresh_tokens.start_family(
            user.id, refresh_token_hash(refresh_token), self._refresh_ttl
        )
        return self._pair(str(user.id), user.roles, refresh_token)

    async def refresh(self, refresh_token: str) -> TokenPair:
        _require_refresh_token(refresh_token)
        new_token = new_refresh_token()
        rotation = await self._refresh_tokens.rotate(
            refresh_token_hash(refresh_token), refresh_token_hash(new_token), self._refresh_ttl
        )
        if rotation.outcome is Outcome.REUSED:
            log.warning(
                "spent refresh token presented again: family revoked",
                extra={"user_id": str(rotation.user_id)},
            )
        if rotation.outcome is not Outcome.ROTATED or rotation.user_id is None:
            raise Unauthenticated(BAD_REFRESH_TOKEN)
        return self._pair(str(rotation.user_id), rotation.roles, new_token)

    async def logout(self, refresh_token: str) -> None:
        _require_refresh_token(refresh_token)
        if not await self._refresh_tokens.revoke_family(
            refresh_token_hash(refresh_token), "logout"
        ):
            raise Unauthenticated(BAD_REFRESH_TOKEN)

    def _pair(self, user_id: str, roles: Sequence[str], refresh_token: str) -> TokenPair:
        return TokenPair(
            access_token=self._issuer.issue(user_id, roles),
            refresh_token=refresh_token,
            expires_in=self._access_ttl,
        )


def _require_refresh_token(token: str) -> None:
    if not token:
        raise invalid([FieldError("refreshToken", "is required")])
