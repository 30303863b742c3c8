"""Embedded MongoDB-wire server: SecantusDB's `secantusd-py`, run as its own process.

Data lives in `data_dir/mongo` (WiredTiger, reopened intact across restarts); SIGTERM makes
it close cleanly.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from mesh.harness.ports import netloc
from mesh.harness.process import EmbeddedServer

SCRIPT = "secantusd-py"


def _secantusd() -> str:
    """The console script beside this interpreter (the virtualenv's), else on PATH."""
    beside = Path(sys.executable).parent / SCRIPT
    if beside.exists():
        return str(beside)
    found = shutil.which(SCRIPT)
    if found is None:
        raise RuntimeError(
            f"embedded MongoDB needs {SCRIPT} (SecantusDB): pip install 'the-mesh[embedded]'"
        )
    return found


class EmbeddedMongo(EmbeddedServer):
    name = "mongo"
    ready_timeout = 30.0

    @property
    def url(self) -> str:
        return f"mongodb://{netloc(self.host, self.port)}/?directConnection=true"

    async def _prepare(self) -> str:
        await asyncio.to_thread(self.path.mkdir, parents=True, exist_ok=True)
        return ""

    def _argv(self) -> list[str]:
        return [
            _secantusd(),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--storage-path",
            str(self.path),
            "--log-level",
            "WARNING",
        ]

    def _env(self) -> Mapping[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    async def _probe(self) -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            self.url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
        )
        try:
            await client.admin.command("ping")
        finally:
            await client.close()
