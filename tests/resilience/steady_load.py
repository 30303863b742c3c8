"""Steady HTTP, gRPC and WebSocket load for the fault cases, with every request's timing.

Each loop of a `SteadyLoad` sends one request at a time until told to stop and records an
`Outcome` per request: when it started and ended (monotonic clock), whether it succeeded,
and what came back (an HTTP status, a gRPC code name, "ack", a WebSocket close code, an
exception's name). `in_flight(at, margin)` picks the requests that were under way when a
fault landed at `at`: started at least `margin` seconds before it (so the process had
received them) and not finished before it. Those must all succeed; the ones started after
the fault are reported on their own.

WebSocket clients send chat messages one at a time (the next after the ack), so the send
in flight when a replica stops is a command the server is processing, which it must answer
before it closes the connection (`services.chat.runtime.close_all`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc

Call = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass(frozen=True)
class Outcome:
    family: str  # "http", "grpc", "ws"
    started: float
    ended: float
    ok: bool
    detail: str
    client: int = 0  # which loop or client

    @property
    def server_error(self) -> bool:
        return self.detail.isdigit() and int(self.detail) >= 500 and len(self.detail) == 3


@dataclass
class SteadyLoad:
    outcomes: list[Outcome] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def loop(self, family: str, call: Call, pause: float = 0.0) -> None:
        """Call `call` over and over (one at a time) until `stop`."""

        index = len(self._tasks)

        async def run() -> None:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    ok, detail = await call()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    ok, detail = False, type(exc).__name__
                except grpc.aio.AioRpcError as exc:
                    ok, detail = False, exc.code().name
                self.outcomes.append(Outcome(family, started, time.monotonic(), ok, detail, index))
                if pause or not ok:  # no busy loop against a refusing port
                    await asyncio.sleep(pause or 0.05)

        self._tasks.append(asyncio.create_task(run()))

    def websocket(self, http: aiohttp.ClientSession, url: str, token: str, room: str) -> None:
        """A chat client on `url` sending to `room` one message at a time until `stop` or close."""
        index = len(self._tasks)
        self._tasks.append(asyncio.create_task(self._ws_client(http, url, token, room, index)))

    async def _ws_client(
        self, http: aiohttp.ClientSession, url: str, token: str, room: str, index: int
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.ws_connect(url, headers=headers, heartbeat=None) as ws:
            await ws.send_json({"type": "join", "room": room})
            while (await ws.receive_json(timeout=10))["type"] != "joined":
                pass
            while not self.stop.is_set():
                ref = uuid.uuid4().hex
                started = time.monotonic()
                try:
                    await ws.send_json(
                        {"type": "send", "room": room, "clientMsgId": ref, "text": "steady"}
                    )
                    ok, detail = await _ack_of(ws, ref)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    ok, detail = False, type(exc).__name__
                self.outcomes.append(Outcome("ws", started, time.monotonic(), ok, detail, index))
                if not ok:
                    return

    async def warmed(self, timeout: float = 20.0) -> None:
        """Wait until every loop and client has finished a request (joined, connected)."""
        async with asyncio.timeout(timeout):
            while True:  # until every one has an outcome
                if len({o.client for o in self.outcomes}) >= len(self._tasks):
                    return
                await asyncio.sleep(0.05)

    async def finish(self) -> None:
        self.stop.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"load clients failed: {errors!r}"

    def in_flight(self, at: float, margin: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.started <= at - margin and o.ended >= at]

    def after(self, at: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.started > at]

    def families(self, outcomes: list[Outcome]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.family] = counts.get(o.family, 0) + 1
        return counts


async def _ack_of(ws: aiohttp.ClientWebSocketResponse, ref: str) -> tuple[bool, str]:
    """Wait for the ack of `ref`: (True, "ack"), or (False, why) on an error or a close."""
    while True:
        message = await ws.receive(timeout=15)
        if message.type is aiohttp.WSMsgType.TEXT:
            frame: dict[str, Any] = message.json()
            if frame["type"] == "ack" and frame.get("clientMsgId") == ref:
                return True, "ack"
            if frame["type"] == "error" and frame.get("ref") == ref:
                return False, f"error {frame.get('code')}"
            continue
        code = ws.close_code if ws.close_code is not None else message.data
        return False, f"closed {code}"
