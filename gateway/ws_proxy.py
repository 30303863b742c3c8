"""`GET /ws/chat`: a WebSocket proxy to chat's ``/ws/chat``.

The upstream handshake happens first, carrying the client's ``Authorization``, ``Origin``,
subprotocols (``Sec-WebSocket-Protocol``), query string and request id; if chat refuses it
(401, 403, ...) the client gets that status as a problem, and if chat cannot be reached a
503 problem, both before any upgrade. Then the client is upgraded with the subprotocol chat
chose, and two pumps relay frames both ways, one frame at a time (each send waits for the
socket to drain, so nothing is buffered beyond a frame). A close frame from either side
closes the other side with the same code and reason; a side that vanishes without one
closes the other with 1001 (client gone) or 1014 (bad gateway: chat gone). On shutdown
(`close_websockets`, an ``on_shutdown`` hook) every client is closed with 1001, and so is
its upstream.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from yarl import URL

from gateway.keys import SETTINGS_KEY, UPSTREAMS_KEY, WEBSOCKETS_KEY
from gateway.upstreams import CHAT
from mesh.problem import ProblemError
from mesh.request_id import REQUEST_ID_HEADER, request_id_of

logger = logging.getLogger(__name__)

WS_PATH: Final = "/ws/chat"
# Close codes that must not be sent in a close frame (RFC 6455 section 7.4.1).
_RESERVED_CODES: Final = frozenset({1004, 1005, 1006, 1015})
_PASSED_HEADERS: Final = (hdrs.AUTHORIZATION,)
_REFUSAL_HEADERS: Final = (hdrs.WWW_AUTHENTICATE, hdrs.RETRY_AFTER)

Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def _sendable(code: int | None) -> int:
    """A close code we may send: the peer's own when allowed, else 1000."""
    if code is None or code in _RESERVED_CODES or not 1000 <= code <= 4999:
        return WSCloseCode.OK
    return code


async def _pump(source: Socket, sink: Socket, vanished: int) -> None:
    """Relay frames from `source` to `sink` until either closes; then close the other."""
    while True:
        message = await source.receive()
        try:
            if message.type is WSMsgType.TEXT:
                await sink.send_str(message.data)
                continue
            if message.type is WSMsgType.BINARY:
                await sink.send_bytes(message.data)
                continue
        except ConnectionError:
            return  # `sink` is gone; the other pump sees it and closes `source`
        if message.type is WSMsgType.CLOSE:
            code = _sendable(message.data)
            reason = (message.extra or "").encode()
            await sink.close(code=code, message=reason)
            await source.close(code=code, message=reason)  # answer the closing side
        elif message.type is not WSMsgType.CLOSING:  # CLOSED, ERROR: vanished, no close frame
            await sink.close(code=vanished)
        return  # CLOSING: the other pump is closing `source`


def _upstream_headers(request: web.Request) -> dict[str, str]:
    headers: dict[str, str] = {
        str(name): request.headers[name] for name in _PASSED_HEADERS if name in request.headers
    }
    request_id = request_id_of(request)
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    return headers


async def _connect_upstream(request: web.Request) -> aiohttp.ClientWebSocketResponse:
    upstreams = request.app[UPSTREAMS_KEY]
    timeout = request.app[SETTINGS_KEY].upstream_timeout_seconds
    offered = [p.strip() for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")]
    url = URL(upstreams.next_chat_url() + WS_PATH).with_query(request.query)
    try:
        return await upstreams.http.ws_connect(
            url,
            protocols=[p for p in offered if p],
            headers=_upstream_headers(request),
            origin=request.headers.get(hdrs.ORIGIN),
            autoclose=False,
            autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout),
        )
    except aiohttp.WSServerHandshakeError as refusal:
        status = refusal.status if refusal.status >= 400 else 502
        returned = refusal.headers
        passed = {str(h): returned[h] for h in _REFUSAL_HEADERS if returned and h in returned}
        raise ProblemError(
            status,
            f"The chat service refused the WebSocket handshake: {refusal.message}.",
            headers=passed,
        ) from None
    except (aiohttp.ClientError, TimeoutError, OSError):
        raise ProblemError(
            503, f"The upstream service '{CHAT}' is unavailable.", extensions={"upstream": CHAT}
        ) from None


async def ws_chat(request: web.Request) -> web.StreamResponse:
    if not web.WebSocketResponse().can_prepare(request).ok:
        upgrade = request.headers.get(hdrs.UPGRADE, "").lower()
        if upgrade != "websocket":
            raise ProblemError(
                426, "Expected a WebSocket upgrade.", headers={hdrs.UPGRADE: "websocket"}
            )
        raise ProblemError(400, "Malformed WebSocket handshake.")
    upstream = await _connect_upstream(request)
    client = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoclose=False,
        autoping=True,
        max_msg_size=request.app[SETTINGS_KEY].body_limit_bytes,
    )
    try:
        await client.prepare(request)
    except BaseException:
        await upstream.close(code=WSCloseCode.GOING_AWAY)
        raise
    request.app[WEBSOCKETS_KEY].add(client)
    await _relay(client, upstream)
    return client


async def _relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    pumps = (
        asyncio.create_task(_pump(client, upstream, vanished=WSCloseCode.GOING_AWAY)),
        asyncio.create_task(_pump(upstream, client, vanished=WSCloseCode.BAD_GATEWAY)),
    )
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # One direction has ended (a close, a vanished peer, a shutdown closing the client,
        # a failure) or the handler is cancelled: close both sides, which also ends the
        # other pump, then collect the pumps. Closing a closed socket does nothing.
        await upstream.close(code=WSCloseCode.GOING_AWAY)
        await client.close(code=WSCloseCode.GOING_AWAY)
        for outcome in await asyncio.gather(*pumps, return_exceptions=True):
            if isinstance(outcome, Exception):  # no problem response after the upgrade
                logger.error("WebSocket relay to %s failed", CHAT, exc_info=outcome)


async def close_websockets(app: web.Application) -> None:
    """`on_shutdown`: close every proxied WebSocket with 1001, which closes its upstream."""
    sockets = app[WEBSOCKETS_KEY]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"Server shutdown")
