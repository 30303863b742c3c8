"""The users domain: registration rules, independent of transport and storage."""

from __future__ import annotations

import re
from typing import Final

from mesh.errors import AlreadyExists, FieldError, invalid
from services.users.passwords import Passwords
from services.users.store import EmailTaken, UserRecord, UserStore

PASSWORD_MIN: Final = 12
PASSWORD_MAX: Final = 128
DISPLAY_NAME_MAX: Final = 100
# Pragmatic shape check: one @, a dot in the domain, no spaces; deliverability is not ours.
_EMAIL: Final = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def normalise_email(email: str) -> str:
    return email.strip().lower()


class UsersService:
    def __init__(self, store: UserStore, passwords: Passwords) -> None:
        self._store = store
        self._passwords = passwords

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
        if not display_name or len(display_name) > DISPLAY_NAME_MAX:
            problems.append(
                FieldError("displayName", f"must be 1 to {DISPLAY_NAME_MAX} characters long")
            )
        if problems:
            raise invalid(problems)
        password_hash = await self._passwords.hash(password)
        try:
            return await self._store.create(email, display_name, password_hash)
        except EmailTaken:
            raise AlreadyExists("an account with this email already exists") from None
