"""Chat end to end from `mesh up` with two chat replicas behind the gateway: sign in, rooms
over REST, messages over WebSockets on both replicas, a replica stopped with SIGTERM (the
supervisor restarts it) while its client reconnects and resumes with `since`."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from mesh.harness import BackingUrls, free_port
from tests.e2e.conftest import running_mesh
from tests.e2e.mesh_process import MeshProcess
from tests.integration.services.chat_support import Client, client, rest

PASSWORD = "a long enough secret"


@pytest.fixture(scope="module")
def mesh(backing: BackingUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcess]:
    """A mesh with two chat replicas behind the gateway."""
    replicas = {
        "MESH_CHAT_REPLICAS": "2",
        "MESH_CHAT_PORTS": f"{free_port()},{free_port()}",
        "MESH_CHAT_OPS_PORTS": f"{free_port()},{free_port()}",
    }
    with running_mesh(backing, tmp_path_factory.mktemp("chat-mesh"), replicas) as running:
        yield running


async def sign_in(mesh: MeshProcess) -> tuple[str, str]:
    credentials = {"email": f"c{uuid.uuid4().hex[:10]}@example.org", "password": PASSWORD}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{mesh.gateway}/api/v1/auth/register", json={**credentials, "displayName": "C"}
        ) as response:
            assert response.status == 200, await response.text()
            user_id = (await response.json())["id"]
        async with http.post(f"{mesh.gateway}/api/v1/auth/login", json=credentials) as response:
            assert response.status == 200, await response.text()
            return user_id, (await response.json())["accessToken"]


@pytest.fixture
async def people(mesh: MeshProcess) -> list[tuple[str, str]]:
    return [await sign_in(mesh) for _ in range(2)]


async def test_two_replicas_start_and_the_gateway_knows_both(mesh: MeshProcess) -> None:
    output = mesh.output()
    assert "started chat-1" in output
    assert "started chat-2" in output
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{mesh.gateway}/health") as response,
    ):
        health = await response.json()
    assert response.status == 200, health
    assert len(health["upstreams"]["chat"]["targets"]) == 2


async def test_chat_through_the_gateway_survives_a_replica_restart(
    mesh: MeshProcess, people: list[tuple[str, str]]
) -> None:
    (_, alice_token), (bob, bob_token) = people
    ws = f"{mesh.gateway.replace('http://', 'ws://')}/ws/chat"
    status, room = await rest(
        "POST", f"{mesh.gateway}/api/v1/chat/rooms", alice_token, {"name": "e2e", "private": True}
    )
    assert status == 201, room
    status, _ = await rest(
        "POST", f"{mesh.gateway}/api/v1/chat/rooms/{room['id']}/members", alice_token,
        {"userId": bob},
    )  # fmt: skip
    assert status == 200
    async with client(ws, alice_token) as a, client(ws, bob_token) as b:
        await a.join(room["id"])
        await b.join(room["id"])
        first = await a.say(room["id"], "one")
        assert (await b.expect("message"))["seq"] == first["seq"]
        # Stop one replica (the supervisor restarts it); its client gets 1012.
        os.kill(mesh.child_pids()["chat-1"][-1], signal.SIGTERM)
        closed, survivor = await _first_closed(a, b)
        assert await closed.close_code() == 1012
        token = alice_token if closed is a else bob_token
        ack = await survivor.say(room["id"], "while you were away")
        async with client(ws, token) as back:  # the gateway sends it to the live replica
            joined = await back.join(room["id"], since=first["seq"])
            assert joined["recovered"] is True
            message = await back.expect("message")
            assert (message["seq"], message["text"]) == (ack["seq"], "while you were away")
    await mesh_restarted(mesh, "chat-1")


async def _first_closed(a: Client, b: Client) -> tuple[Client, Client]:
    waits = {asyncio.create_task(c.connection.wait_closed()): c for c in (a, b)}
    done, pending = await asyncio.wait(waits, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert done, "no client was closed"
    closed = waits[done.pop()]
    return closed, b if closed is a else a


async def mesh_restarted(mesh: MeshProcess, name: str) -> None:
    for _ in range(100):
        if len(mesh.child_pids().get(name, [])) == 2:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} was not restarted:\n{mesh.output()[-3000:]}")


def test_sigint_stops_both_replicas_cleanly(mesh: MeshProcess) -> None:
    code, elapsed = mesh.stop(signal.SIGINT)
    assert code == 0, mesh.output()[-3000:]
    assert elapsed < 10
    assert "Traceback" not in mesh.output()
