"""The `mesh` command: `mesh up` runs the whole mesh locally, `mesh migrate` applies the
database migrations, `mesh seed` loads the demo catalog, `mesh users grant-admin EMAIL`
makes an account admin."""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop

from mesh.backing_settings import StoreUrls
from mesh.logs import configure_logging
from mesh.settings import Env, SettingsError, redact_url


def _up(_: argparse.Namespace) -> int:
    from mesh.supervisor import FatalStartError, UpSettings, up

    settings = UpSettings.from_env(Env())
    try:
        return uvloop.run(up(settings))
    except FatalStartError as exc:
        print(f"mesh up: {exc}", file=sys.stderr, flush=True)
        return 1


def _migrate(_: argparse.Namespace) -> int:
    from mesh.migrate import migrate_all

    stores = StoreUrls.from_env(Env())
    applied = asyncio.run(migrate_all(stores.postgres_dsn, stores.namespace))
    for service, versions in applied.items():
        done = ", ".join(map(str, versions)) or "nothing (up to date)"
        print(f"{service}: applied {done} on {redact_url(stores.postgres_for(service))}")
    return 0


def _seed(args: argparse.Namespace) -> int:
    from mesh.migrate import migrate_all
    from services.catalog.seed import seed

    stores = StoreUrls.from_env(Env())

    async def run() -> int:
        await migrate_all(stores.postgres_dsn, stores.namespace)
        return await seed(stores.postgres_dsn, stores.namespace, args.count)

    added = asyncio.run(run())
    print(f"added {added} products to {redact_url(stores.postgres_for('catalog'))}")
    return 0


def _grant_admin(args: argparse.Namespace) -> int:
    from services.users.admin import grant_admin_command

    return grant_admin_command(args.email)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mesh", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "up", help="start the backing services and all processes (foreground)"
    ).set_defaults(func=_up)
    commands.add_parser(
        "migrate", help="apply the PostgreSQL migrations of every service"
    ).set_defaults(func=_migrate)
    seed = commands.add_parser("seed", help="load the demo catalog (idempotent)")
    seed.add_argument("--count", type=int, default=3000, help="products (default 3000)")
    seed.set_defaults(func=_seed)
    users = commands.add_parser("users", help="operate on accounts")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    grant = users_commands.add_parser("grant-admin", help="give an account the admin role")
    grant.add_argument("email")
    grant.set_defaults(func=_grant_admin)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("mesh", Env().str("MESH_LOG_LEVEL", "info"))
    try:
        code: int = args.func(args)
    except SettingsError as exc:
        print(f"mesh {args.command}: {exc}", file=sys.stderr, flush=True)
        return 78
    return code


if __name__ == "__main__":
    raise SystemExit(main())
