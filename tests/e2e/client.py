"""What an e2e test does as a client: JSON calls through the gateway and `mesh` commands."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict

from tests.e2e.mesh_process import MESH, MeshProcess


async def call(
    http: aiohttp.ClientSession, method: str, url: str, token: str | None = None, **kwargs: Any
) -> tuple[int, CIMultiDict[str], Any]:
    """Status, headers (case-insensitive) and the JSON body (None when empty) of one call."""
    headers = dict(kwargs.pop("headers", {}))
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with http.request(method, url, headers=headers, **kwargs) as response:
        text = await response.text()
        return response.status, CIMultiDict(response.headers), orjson.loads(text) if text else None


async def mesh_cli(mesh: MeshProcess, *args: str) -> tuple[int, str]:
    """Run the `mesh` command with the mesh's environment: its exit code and its output."""
    process = await asyncio.create_subprocess_exec(
        MESH,
        *args,
        env=mesh.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, output.decode()


PASSWORD = "a long enough secret"


@dataclass(frozen=True)
class Account:
    email: str
    id: str
    access_token: str
    refresh_token: str
    user: dict[str, Any]  # the registration's answer
    tokens: dict[str, Any]  # the login's answer


async def new_account(
    mesh: MeshProcess, http: aiohttp.ClientSession, *, admin: bool = False
) -> Account:
    """A new account, signed in; made admin with `mesh users grant-admin` when asked."""
    email = f"a{uuid.uuid4().hex[:12]}@example.org"
    status, _, user = await call(
        http,
        "POST",
        f"{mesh.gateway}/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "displayName": "Someone"},
    )
    assert status == 200, user
    if admin:
        code, output = await mesh_cli(mesh, "users", "grant-admin", email)
        assert code == 0, output
    tokens = await log_in(http, mesh.gateway, email)
    return Account(email, user["id"], tokens["accessToken"], tokens["refreshToken"], user, tokens)


async def log_in(http: aiohttp.ClientSession, gateway: str, email: str) -> dict[str, Any]:
    """The login answer (tokens) of an account registered with `PASSWORD`."""
    status, _, tokens = await call(
        http, "POST", f"{gateway}/api/v1/auth/login", json={"email": email, "password": PASSWORD}
    )
    assert status == 200, tokens
    result: dict[str, Any] = tokens
    return result
