"""A small populated mesh for the security tests: two users, an admin and their objects.

Alice owns a reservation, a private room with a message in it and a public room; Bob is a
second ordinary user who should reach none of Alice's private things; the admin may do
anything. Built once per test module (each module has its own mesh).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.e2e.client import Account, call, new_account
from tests.e2e.mesh_process import MeshProcess
from tests.integration.services.chat_support import client as chat_client


@dataclass(frozen=True)
class World:
    gateway: str
    alice: Account
    bob: Account
    admin: Account
    product: dict[str, Any]
    reservation: dict[str, Any]  # Alice's
    private_room: dict[str, Any]  # Alice's, with one message
    public_room: dict[str, Any]  # Alice's
    message: dict[str, Any]  # the ack of Alice's message in her private room

    def token(self, access: str) -> str | None:
        """A token good enough for an operation of `access` (the admin's for admin ones)."""
        return {"public": None, "user": self.alice.access_token}.get(
            access, self.admin.access_token
        )


def product_body(**changes: Any) -> dict[str, Any]:
    return {
        "sku": f"RES-{uuid.uuid4().hex[:10]}",
        "name": "Resilience kettle",
        "description": "made for the security suite",
        "priceCents": 1999,
        "currency": "EUR",
        "category": "resilience",
        "stock": 50,
        "attributes": {"litres": 1.5},
        **changes,
    }


async def new_product(
    http: aiohttp.ClientSession, gateway: str, admin: Account, **changes: Any
) -> dict[str, Any]:
    status, _, product = await call(
        http, "POST", f"{gateway}/api/v1/products", admin.access_token, json=product_body(**changes)
    )
    assert status == 200, product
    return dict(product)


async def new_room(
    http: aiohttp.ClientSession, gateway: str, owner: Account, *, private: bool
) -> dict[str, Any]:
    status, _, room = await call(
        http,
        "POST",
        f"{gateway}/api/v1/chat/rooms",
        owner.access_token,
        json={"name": f"room {uuid.uuid4().hex[:6]}", "private": private},
    )
    assert status == 201, room
    return dict(room)


async def build_world(mesh: MeshProcess) -> World:
    gateway = mesh.gateway
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        alice = await new_account(mesh, http)
        bob = await new_account(mesh, http)
        admin = await new_account(mesh, http, admin=True)
        product = await new_product(http, gateway, admin)
        status, _, reservation = await call(
            http,
            "POST",
            f"{gateway}/api/v1/products/{product['id']}:reserve",
            alice.access_token,
            json={"quantity": 2, "idempotencyKey": "alice-1"},
        )
        assert status == 200, reservation
        product = (await call(http, "GET", f"{gateway}/api/v1/products/{product['id']}"))[2]
        private_room = await new_room(http, gateway, alice, private=True)
        public_room = await new_room(http, gateway, alice, private=False)
    ws = gateway.replace("http://", "ws://") + "/ws/chat"
    async with chat_client(ws, alice.access_token) as alice_ws:
        await alice_ws.join(private_room["id"])
        message = await alice_ws.say(private_room["id"], "for Alice's eyes only")
    return World(
        gateway, alice, bob, admin, product, reservation, private_room, public_room, message
    )
