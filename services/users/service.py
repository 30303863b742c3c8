"""The users domain: registration rules and account reads, independent of transport.

The caller comes only from the verified access token (`current_caller()`); the admin
methods check the role here too, not only in the server interceptor.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Final

from mesh.auth.identity import current_caller
from mesh.errors import AlreadyExists, FieldError, NotFound, PermissionDenied, invalid
from services.users.page_tokens import Cursor, InvalidPageToken, PageTokens
from services.users.passwords import Passwords
from services.users.store import EmailTaken, UserRecord, UserStore

PASSWORD_MIN: Final = 12
PASSWORD_MAX: Final = 128
DISPLAY_NAME_MAX: Final = 100
PAGE_SIZE_DEFAULT: Final = 20
PAGE_SIZE_MAX: Final = 100
# Pragmatic shape check: one @, a dot in the domain, no spaces or control characters (NUL
# would not even reach PostgreSQL text); deliverability is not ours.
_EMAIL: Final = re.compile(
    r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]{2,}$"
)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def normalise_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[UserRecord]
    next_page_token: str


def _display_name_problem(display_name: str) -> FieldError | None:
    if not display_name or len(display_name) > DISPLAY_NAME_MAX:
        return FieldError("displayName", f"must be 1 to {DISPLAY_NAME_MAX} characters long")
    if _CONTROL.search(display_name):
        return FieldError("displayName", "must not contain control characters")
    return None


class UsersService:
    def __init__(self, store: UserStore, passwords: Passwords, page_tokens: PageTokens) -> None:
        self._store = store
        self._passwords = passwords
        self._page_tokens = page_tokens

    async def register(self, email: str, password: str, display_name: str) -> UserRecord:
        email = normalise_email(email)
        display_name = display_name.strip()
        problems: list[FieldError] = []
        if len(email) > 254 or not _EMAIL.match(email):
            problems.append(FieldError("email", "must be an email address"))
        if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
            problems.append(
                FieldError("password", f"must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long")
            )
        elif normalise_email(password) == email:
            problems.append(FieldError("password", "must not be the email address"))
        if (problem := _display_name_problem(display_name)) is not None:
            problems.append(problem)
        if problems:
            raise invalid(problems)
        password_hash = await self._passwords.hash(password)
        try:
            return await self._store.create(email, display_name, password_hash)
        except EmailTaken:
            raise AlreadyExists("an account with this email already exists") from None

    async def get_me(self) -> UserRecord:
        caller_id = _caller_id()
        user = await self._store.get(caller_id)
        if user is None:
            raise NotFound("your account no longer exists")
        return user

    async def update_me(self, display_name: str) -> UserRecord:
        caller_id = _caller_id()
        display_name = display_name.strip()
        if (problem := _display_name_problem(display_name)) is not None:
            raise invalid([problem])
        user = await self._store.set_display_name(caller_id, display_name)
        if user is None:
            raise NotFound("your account no longer exists")
        return user

    async def get_user(self, user_id: str) -> UserRecord:
        _require_admin()
        try:
            key = uuid.UUID(user_id)
        except ValueError:
            raise invalid([FieldError("id", "must be a user id (a UUID)")]) from None
        user = await self._store.get(key)
        if user is None:
            raise NotFound("no user with this id")
        return user

    async def list_users(self, page_size: int | None, page_token: str) -> UserPage:
        _require_admin()
        problems: list[FieldError] = []
        if page_size is None:
            page_size = PAGE_SIZE_DEFAULT
        elif not 1 <= page_size <= PAGE_SIZE_MAX:
            problems.append(FieldError("pageSize", f"must be 1 to {PAGE_SIZE_MAX}"))
        after: Cursor | None = None
        if page_token:
            try:
                after = self._page_tokens.decode(page_token)
            except InvalidPageToken:
                problems.append(
                    FieldError("pageToken", "is not a page token from a previous response")
                )
        if problems:
            raise invalid(problems)
        rows = await self._store.page(after, page_size + 1)
        users = rows[:page_size]
        next_token = ""
        if len(rows) > page_size:
            last = users[-1]
            next_token = self._page_tokens.encode(Cursor(last.created_at, last.id))
        return UserPage(users, next_token)


def _caller_id() -> uuid.UUID:
    caller = current_caller()
    try:
        return uuid.UUID(caller.user_id)
    except ValueError:
        raise NotFound("your account no longer exists") from None


def _require_admin() -> None:
    if not current_caller().is_admin:
        raise PermissionDenied("this call needs the admin role")
