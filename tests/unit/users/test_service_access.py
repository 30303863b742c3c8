"""The admin reads check the caller's role in the domain too, not only in the interceptor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mesh.auth.identity import Caller, caller_var
from mesh.errors import PermissionDenied, Unauthenticated
from services.users.page_tokens import PageTokens
from services.users.passwords import Passwords
from services.users.service import UsersService


class UntouchableStore:
    """Any storage access fails the test: the check must come first."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"store.{name} reached")


@pytest.fixture
def service() -> Iterator[UsersService]:
    passwords = Passwords(memory_kib=19 * 1024, time_cost=2, threads=1)
    yield UsersService(UntouchableStore(), passwords, PageTokens(b"k" * 32))  # type: ignore[arg-type]
    passwords.close()


@pytest.fixture
def as_user() -> Iterator[None]:
    token = caller_var.set(Caller("00000000-0000-0000-0000-000000000001", ("user",), "j"))
    yield
    caller_var.reset(token)


@pytest.mark.usefixtures("as_user")
async def test_a_normal_user_cannot_read_other_accounts(service: UsersService) -> None:
    with pytest.raises(PermissionDenied):
        await service.get_user("00000000-0000-0000-0000-000000000002")
    with pytest.raises(PermissionDenied):
        await service.list_users(None, "")


async def test_without_a_caller_nothing_is_read(service: UsersService) -> None:
    with pytest.raises(Unauthenticated):
        await service.get_me()
    with pytest.raises(Unauthenticated):
        await service.get_user("00000000-0000-0000-0000-000000000002")
    with pytest.raises(Unauthenticated):
        await service.update_me("New name")
