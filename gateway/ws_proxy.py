"""`GET /ws/chat`: a WebSocket proxy to chat's ``/ws/chat``, spread over the chat replicas.

Before anything reaches chat, the gateway checks the handshake itself: a foreign ``Origin``
(not in ``MESH_ALLOWED_ORIGINS``) is a 403 problem, missing or invalid credentials a 401
problem (``Authorization: Bearer <token>`` or, for browsers, the subprotocol pair
``bearer, <token>``; see `mesh.auth.handshake`). Chat verifies the token again.

The upstream handshake happens next, carrying the client's ``Authorization``, ``Origin``,
subprotocols (``Sec-WebSocket-Protocol``), query string and request id, to the replica with
the fewest proxied sockets; a replica that cannot be reached or answers 503 (it is shutting
down) is skipped for the next one, so clients closed with 1012 by a stopping replica land
on another. If chat refuses the handshake (401, 403, 429, ...) the client gets that status
as a problem, and if no replica can be reached a 503 problem, both before any upgrade.
Then the client is upgraded with the subprotocol chat chose, and two pumps relay frames
both ways, one frame at a time (each send waits for the socket to drain, so nothing is
buffered beyond a frame: a client that stops reading stops the pump, and chat's bounded
send queue notices). Pings and pongs are relayed too, so chat's keepalive measures the
client, not the gateway. A close frame from either side closes the other side with the
same code and reason; a side that vanishes without one closes the other with 1001 (client
gone) or 1014 (bad gateway: chat gone).

On shutdown (`close_websockets`, an ``on_shutdown`` hook) the gateway ends each session on
the upstream side first, so that no acknowledgement is lost: it stops relaying the client's
frames and sends chat a close frame (1001); chat answers the command it is working on, then
echoes the close, and the relay passes both on (the client gets the ack, then 1001). A frame
the client sent after that point never reached chat, so it is never acknowledged and the
client resends it elsewhere. Sessions not closed within `DRAIN_SECONDS` (a chat that does
not answer) are closed with 1001 on both sides, as is any socket left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from yarl import URL

from gateway.keys import (
    SETTINGS_KEY,
    UPSTREAMS_KEY,
    VERIFIER_KEY,
    WEBSOCKETS_KEY,
    WS_DRAINING_KEY,
)
from gateway.upstreams import CHAT
from mesh.auth.handshake import handshake_credentials, offered_protocols, origin_allowed
from mesh.auth.tokens import InvalidToken
from mesh.problem import ProblemError
from mesh.request_id import REQUEST_ID_HEADER, request_id_of

logger = logging.getLogger(__name__)

WS_PATH: Final = "/ws/chat"
DRAIN_SECONDS: Final = 2.0  # how long shutdown waits for chat to end the sessions
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


async def _pump(
    source: Socket, sink: Socket, vanished: int, draining: asyncio.Event | None = None
) -> None:
    """Relay frames from `source` to `sink` until either closes; then close the other (with
    1001 when `draining` is set: the close answers the gateway's own, at shutdown)."""
    while True:
        message = await source.receive()
        try:
            if message.type is WSMsgType.TEXT:
                await sink.send_str(message.data)
                continue
            if message.type is WSMsgType.BINARY:
                await sink.send_bytes(message.data)
                continue
            if message.type is WSMsgType.PING:
                await sink.ping(message.data)
                continue
            if message.type is WSMsgType.PONG:
                await sink.pong(message.data)
                continue
        except ConnectionError:
            return  # `sink` is gone; the other pump sees it and closes `source`
        if message.type is WSMsgType.CLOSE:
            code = _sendable(message.data)
            reason = (message.extra or "").encode()
            if draining is not None and draining.is_set():
                code, reason = WSCloseCode.GOING_AWAY, b"Server shutdown"
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


async def authenticate(request: web.Request) -> None:
    """The gateway's own handshake check, before chat is contacted: Origin, then token."""
    settings = request.app[SETTINGS_KEY]
    if not origin_allowed(request.headers.get(hdrs.ORIGIN), settings.allowed_origins):
        raise ProblemError(403, "This page's Origin may not open a chat WebSocket.")
    credentials = handshake_credentials(
        request.headers.get(hdrs.AUTHORIZATION),
        offered_protocols(request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL)),
    )
    if credentials.token is None:
        raise ProblemError(401, credentials.problem, headers={hdrs.WWW_AUTHENTICATE: "Bearer"})
    try:
        await request.app[VERIFIER_KEY].verify(credentials.token)
    except InvalidToken as exc:
        raise ProblemError(
            401, str(exc), headers={hdrs.WWW_AUTHENTICATE: 'Bearer error="invalid_token"'}
        ) from None


async def _connect_upstream(request: web.Request) -> tuple[str, aiohttp.ClientWebSocketResponse]:
    upstreams = request.app[UPSTREAMS_KEY]
    timeout = request.app[SETTINGS_KEY].upstream_timeout_seconds
    offered = offered_protocols(request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL))
    for base in upstreams.chat_socket_candidates():
        url = URL(base + WS_PATH).with_query(request.query)
        try:
            upstream = await upstreams.http.ws_connect(
                url,
                protocols=offered,
                headers=_upstream_headers(request),
                origin=request.headers.get(hdrs.ORIGIN),
                autoclose=False,
                autoping=False,  # pings and pongs are relayed end to end
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout),
            )
        except aiohttp.WSServerHandshakeError as refusal:
            if refusal.status == 503:
                continue  # that replica is stopping: try the next
            status = refusal.status if refusal.status >= 400 else 502
            returned = refusal.headers
            passed = {str(h): returned[h] for h in _REFUSAL_HEADERS if returned and h in returned}
            raise ProblemError(
                status,
                f"The chat service refused the WebSocket handshake: {refusal.message}.",
                headers=passed,
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError):
            logger.warning("chat replica %s cannot be reached", base)
            continue
        return base, upstream
    raise ProblemError(
        503,
        f"The upstream service '{CHAT}' is unavailable.",
        headers={hdrs.RETRY_AFTER: "1"},
        extensions={"upstream": CHAT},
    )


async def ws_chat(request: web.Request) -> web.StreamResponse:
    if not web.WebSocketResponse().can_prepare(request).ok:
        upgrade = request.headers.get(hdrs.UPGRADE, "").lower()
        if upgrade != "websocket":
            raise ProblemError(
                426, "Expected a WebSocket upgrade.", headers={hdrs.UPGRADE: "websocket"}
            )
        raise ProblemError(400, "Malformed WebSocket handshake.")
    await authenticate(request)
    base, upstream = await _connect_upstream(request)
    upstreams = request.app[UPSTREAMS_KEY]
    upstreams.chat_socket_opened(base)
    try:
        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoclose=False,
            autoping=False,
            max_msg_size=request.app[SETTINGS_KEY].body_limit_bytes,
        )
        try:
            await client.prepare(request)
        except BaseException:
            await upstream.close(code=WSCloseCode.GOING_AWAY)
            raise
        request.app[WEBSOCKETS_KEY].add(client)
        await _relay(client, upstream, request.app[WS_DRAINING_KEY])
    finally:
        upstreams.chat_socket_closed(base)
    return client


async def _relay(
    client: web.WebSocketResponse,
    upstream: aiohttp.ClientWebSocketResponse,
    draining: asyncio.Event,
) -> None:
    to_upstream = asyncio.create_task(_pump(client, upstream, vanished=WSCloseCode.GOING_AWAY))
    to_client = asyncio.create_task(
        _pump(upstream, client, vanished=WSCloseCode.BAD_GATEWAY, draining=draining)
    )
    pumps = (to_upstream, to_client)
    drain = asyncio.create_task(draining.wait())
    try:
        done, _ = await asyncio.wait((*pumps, drain), return_when=asyncio.FIRST_COMPLETED)
        if drain in done and not any(p.done() for p in pumps):
            # Shutdown: no client frame after our close frame; chat answers what it is
            # working on, then echoes the close, which `to_client` relays (module docstring).
            # `upstream.close()` would end `to_client`'s receive at once, so the close frame
            # goes through the socket's writer.
            to_upstream.cancel()
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await upstream._writer.close(WSCloseCode.GOING_AWAY, b"gateway shutting down")
            await asyncio.wait((to_client,), timeout=DRAIN_SECONDS)
    finally:
        drain.cancel()
        # One direction has ended (a close, a vanished peer, a shutdown closing the client,
        # a failure) or the handler is cancelled: close both sides, which also ends the
        # other pump, then collect the pumps. Closing a closed socket does nothing.
        await upstream.close(code=WSCloseCode.GOING_AWAY)
        await client.close(code=WSCloseCode.GOING_AWAY)
        for outcome in await asyncio.gather(*pumps, return_exceptions=True):
            if isinstance(outcome, Exception):  # no problem response after the upgrade
                logger.error("WebSocket relay to %s failed", CHAT, exc_info=outcome)


async def close_websockets(app: web.Application) -> None:
    """`on_shutdown`: end every proxied session upstream first (see the module's docstring),
    then close whatever is left with 1001."""
    sockets = app[WEBSOCKETS_KEY]
    app[WS_DRAINING_KEY].set()
    for _ in range(int(DRAIN_SECONDS / 0.02)):  # the relays close them as chat answers
        if all(ws.closed for ws in sockets):
            break
        await asyncio.sleep(0.02)
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"Server shutdown")
