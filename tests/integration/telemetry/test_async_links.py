"""Trace context across the asynchronous hops: chat fan-out through Redis pub/sub, and
domain events through the outbox and a Redis Stream into the analytics consumer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.e2e.client import call
from tests.e2e.mesh_process import MeshProcess
from tests.integration.services.chat_support import client, create_room
from tests.integration.telemetry.conftest import chat_ports, new_traceparent
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, render_tree

PASSWORD = "a long enough secret"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def register(
    mesh: MeshProcess, http: aiohttp.ClientSession, traceparent: str | None = None
) -> tuple[str, str]:
    """A new user's id and access token."""
    credentials = {"email": f"l{uuid.uuid4().hex[:10]}@example.org", "password": PASSWORD}
    headers = {"traceparent": traceparent} if traceparent else {}
    status, _, body = await call(
        http,
        "POST",
        f"{mesh.gateway}/api/v1/auth/register",
        json={**credentials, "displayName": "L"},
        headers=headers,
    )
    assert status == 200, body
    user_id = str(body["id"])
    status, _, body = await call(
        http, "POST", f"{mesh.gateway}/api/v1/auth/login", json=credentials
    )
    assert status == 200, body
    return user_id, str(body["accessToken"])


async def test_a_domain_event_carries_its_trace_into_the_analytics_consumer(
    traced_mesh: MeshProcess, receiver: OtlpReceiver, http: aiohttp.ClientSession
) -> None:
    header, trace_id, _ = new_traceparent()
    await register(traced_mesh, http, header)  # writes user.registered through the outbox

    def registration(r: OtlpReceiver) -> ReceivedSpan | None:
        return next(
            (s for s in r.trace(trace_id) if (s.service, s.kind) == ("users", "SERVER")), None
        )

    def consumer(r: OtlpReceiver) -> ReceivedSpan | None:
        return next(
            (
                s
                for s in r.spans
                if s.service == "analytics" and any(t == trace_id for t, _ in s.links)
            ),
            None,
        )

    handler = await receiver.wait_for(registration)
    assert handler.name == "users.v1.UsersService/Register"
    batch = await receiver.wait_for(consumer)
    # A root of its own trace (a batch belongs to no single request), linked to the span
    # that wrote the event in the registration's trace.
    assert batch.kind == "CONSUMER"
    assert batch.parent_span_id == ""
    assert batch.trace_id != trace_id
    assert batch.name == f"process {traced_mesh.namespace}mesh:events"
    assert (trace_id, handler.span_id) in batch.links
    assert batch.attributes["messaging.consumer.group.name"] == "analytics"
    # ...whose children are the consumer's MongoDB writes.
    stored = await receiver.wait_for(
        lambda r: [s for s in r.trace(batch.trace_id) if s.parent_span_id == batch.span_id]
    )
    assert {s.attributes.get("db.system") for s in stored} == {"mongodb"}


async def test_chat_fanout_links_every_replicas_delivery_to_the_sender(
    traced_mesh: MeshProcess, receiver: OtlpReceiver
) -> None:
    async with aiohttp.ClientSession() as http:
        _, alice = await register(traced_mesh, http)
        _, bob = await register(traced_mesh, http)
    room = await create_room(traced_mesh.gateway, alice, "traced")
    first, second = (f"ws://127.0.0.1:{port}/ws/chat" for port in chat_ports(traced_mesh))
    header, trace_id, client_span = new_traceparent()
    async with (
        client(first, alice, additional_headers={"traceparent": header}) as a,
        client(second, bob) as b,
    ):
        await a.join(room)
        await b.join(room)
        ack = await a.say(room, "traced hello")
        assert (await b.expect("message"))["seq"] == ack["seq"]

        def sent(r: OtlpReceiver) -> ReceivedSpan | None:
            sends = r.named("chat send", "chat")
            return next((s for s in sends if any(t == trace_id for t, _ in s.links)), None)

        send = await receiver.wait_for(sent)

        def delivered(r: OtlpReceiver) -> list[ReceivedSpan] | None:
            spans = [
                s
                for s in r.named("chat deliver", "chat")
                if (send.trace_id, send.span_id) in s.links
            ]
            return spans if len(spans) >= 2 else None

        deliveries = await receiver.wait_for(delivered)
    # The send: a root of its own trace, linked to the connection's (alice's) handshake,
    # whose span continues alice's trace and arrives when the socket is closed.
    handshake = await receiver.wait_for(
        lambda r: next((s for s in r.trace(trace_id) if s.parent_span_id == client_span), None)
    )
    assert (handshake.service, handshake.name) == ("chat", "GET /ws/chat")
    assert send.links == ((trace_id, handshake.span_id),)
    assert (send.kind, send.parent_span_id) == ("SERVER", "")
    assert send.attributes["chat.room"] == room
    publish = [s for s in receiver.trace(send.trace_id) if s.name == "PUBLISH"]
    assert publish
    assert all(s.parent_span_id == send.span_id for s in publish)
    # Each replica delivers in a CONSUMER span of its own trace linked to the send: the
    # sender's replica (alice is there) and the other one (bob).
    instances = {s.resource["service.instance.id"] for s in deliveries}
    assert len(instances) == 2, "\n".join(render_tree([s]) for s in deliveries)
    assert send.resource["service.instance.id"] in instances
    for delivery in deliveries:
        assert (delivery.kind, delivery.parent_span_id) == ("CONSUMER", "")
        assert delivery.trace_id != send.trace_id
        assert delivery.attributes["chat.seq"] == ack["seq"]


async def test_a_websocket_through_the_gateway_continues_the_clients_trace(
    traced_mesh: MeshProcess, receiver: OtlpReceiver
) -> None:
    async with aiohttp.ClientSession() as http:
        _, token = await register(traced_mesh, http)
    room = await create_room(traced_mesh.gateway, token, "via gateway")
    header, trace_id, client_span = new_traceparent()
    ws = f"{traced_mesh.gateway.replace('http://', 'ws://')}/ws/chat"
    async with client(ws, token, additional_headers={"traceparent": header}) as connection:
        await connection.join(room)
    # The handshake spans last as long as the socket: they arrive once it is closed.

    def complete(r: OtlpReceiver) -> list[ReceivedSpan] | None:
        spans = r.trace(trace_id)
        hops = {(s.service, s.kind) for s in spans}
        wanted = {("gateway", "SERVER"), ("gateway", "CLIENT"), ("chat", "SERVER")}
        return spans if wanted <= hops else None

    spans = await receiver.wait_for(complete)
    gateway = next(s for s in spans if s.service == "gateway" and s.kind == "SERVER")
    assert (gateway.name, gateway.parent_span_id) == ("GET /ws/chat", client_span)
    proxy = next(s for s in spans if s.service == "gateway" and s.kind == "CLIENT")
    assert proxy.parent_span_id == gateway.span_id
    chat = next(s for s in spans if s.service == "chat" and s.kind == "SERVER")
    assert (chat.name, chat.parent_span_id) == ("GET /ws/chat", proxy.span_id)
    assert chat.attributes["http.response.status_code"] == 101
