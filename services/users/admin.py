"""Operator commands of the users service: `mesh users grant-admin EMAIL`.

Granting works directly on the users database (an operator action, not an API call). It
is idempotent; access tokens issued before the grant keep their old roles until they
expire (15 minutes at most), while GetMe shows the new role at once.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import TextIO

import asyncpg

from mesh.auth.identity import ADMIN_ROLE
from mesh.backing_settings import POSTGRES_VAR, StoreUrls
from mesh.netbind import StartupError
from mesh.settings import Env, redact_url
from mesh.stores import postgres_pool
from services.users.service import normalise_email
from services.users.store import PostgresUserStore, UnknownEmail, UserRecord


@dataclass(frozen=True, slots=True)
class Granted:
    user: UserRecord
    changed: bool


async def grant_admin(stores: StoreUrls, email: str) -> Granted:
    """Give the account with `email` the admin role; raises UnknownEmail if there is none."""
    async with postgres_pool(stores.postgres_for("users"), POSTGRES_VAR, min_size=1) as pool:
        user, changed = await PostgresUserStore(pool).add_role(normalise_email(email), ADMIN_ROLE)
    return Granted(user, changed)


def grant_admin_command(
    email: str,
    stores: StoreUrls | None = None,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """The CLI entry point: prints one line; exit code 0 done, 1 unknown email or no DB.

    `stores` defaults to what `mesh migrate` uses: MESH_POSTGRES_DSN and MESH_NAMESPACE.
    """
    stores = stores or StoreUrls.from_env(Env())
    try:
        granted = asyncio.run(grant_admin(stores, email))
    except UnknownEmail:
        print(
            f"users grant-admin: no account with email {normalise_email(email)!r}"
            f" in {redact_url(stores.postgres_for('users'))}",
            file=err,
        )
        return 1
    except StartupError as exc:
        print(f"users grant-admin: {exc}", file=err)
        return 1
    except asyncpg.UndefinedTableError:
        print("users grant-admin: the users database is not migrated: run `mesh migrate`", file=err)
        return 1
    user = granted.user
    if granted.changed:
        print(f"granted admin to {user.email} (id {user.id})", file=out)
    else:
        print(f"{user.email} (id {user.id}) is already an admin", file=out)
    return 0
