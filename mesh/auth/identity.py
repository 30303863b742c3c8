"""Who is calling: taken only from a verified access token, never from a header or body."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from mesh.errors import Unauthenticated

ADMIN_ROLE = "admin"


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    roles: tuple[str, ...]
    token_id: str

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles


caller_var: ContextVar[Caller | None] = ContextVar("mesh_caller", default=None)


def current_caller() -> Caller:
    """The verified caller of the current call; Unauthenticated when there is none."""
    caller = caller_var.get()
    if caller is None:
        raise Unauthenticated("sign in first: this call needs a valid access token")
    return caller


def optional_caller() -> Caller | None:
    return caller_var.get()
