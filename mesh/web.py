"""Serving an aiohttp app as a mesh process (the gateway, chat).

The app gets the observability middleware in front, is served without an access log on
the hot path, next to the ops server; on a stop request readiness goes false, the listener
closes, in-flight requests get the grace period and WebSockets are closed by the app's
`on_shutdown` handlers.

**Request-head timeout (slow-loris defence).** aiohttp has no timeout for receiving a
request's head: a client that sends its request line and headers a byte at a time keeps a
connection (and its buffers) until the keep-alive timeout, 75 s, and a few thousand such
clients exhaust the process. `HeadTimeoutRunner` serves connections whose handler
(`HeadTimeoutHandler`) closes them when a request head is not complete in time:

* the timer starts when the connection is accepted (a client that connects and sends
  nothing is dropped after the timeout too) and, for each later request on a keep-alive
  connection, at the first byte of its head: the idle time between requests stays governed
  by the keep-alive timeout, so keep-alive clients (and load balancers, whose idle timeout
  must stay below the server's) are unaffected;
* the timer stops as soon as the head is complete (the parser produced a message); body
  reading, handling and WebSockets are not limited by it;
* on expiry, a client that sent part of a head gets ``408 Request Timeout``
  (``application/problem+json``, ``Connection: close``), a silent one nothing; then the
  connection is closed.

**Requests the parser refuses** (before any middleware runs) are answered as problems too,
not with aiohttp's plain text: a method the parser does not know (``FOO``; it knows the
standard and WebDAV ones, which reach the app) is ``405`` with ``Allow`` listing the
standard methods, a request line over `MAX_REQUEST_LINE_BYTES` ``414``, a header line over
aiohttp's 8190 bytes or more than its 128 headers ``431`` (RFC 6585; the value is never
echoed, it may be a credential), TLS sent to the plain port and any other malformed head
``400``. They are logged at debug level, without a traceback: they are the client's errors,
and scanners send plenty. Every answer says ``Server: mesh`` (`SERVER_HEADER`), not
aiohttp's name and version.

The timeout is `DEFAULT_HEAD_TIMEOUT_SECONDS` unless the app says otherwise
(`HEAD_TIMEOUT_KEY`, set by the gateway from ``MESH_GATEWAY_HEADER_TIMEOUT_SECONDS``); the
ops server of the process gets the same. This leans on a few aiohttp internals
(`RequestHandler`'s ``_request_count`` and ``_messages``, `Server`'s ``_loop`` and
``_kwargs``); aiohttp is pinned, and ``tests/integration/gateway/test_slow_loris.py`` fails
if they change meaning.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from http import HTTPStatus
from typing import Any, Final

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong

from mesh.common import CommonSettings
from mesh.http_observability import echo_traceparent, observability_middleware
from mesh.lifecycle import Lifecycle
from mesh.netbind import bind_site
from mesh.ops import ops_server

log = logging.getLogger("mesh.web")
MAX_REQUEST_LINE_BYTES = 16 * 1024
DEFAULT_HEAD_TIMEOUT_SECONDS: Final = 10.0
HEAD_TIMEOUT_KEY: Final = web.AppKey("mesh_head_timeout_seconds", float)
"""How long a client may take to send a request head (app setting; default 10 s)."""


STANDARD_METHODS: Final = "DELETE,GET,HEAD,PATCH,POST,PUT"
SERVER_HEADER: Final = "mesh"
"""Every answer's ``Server``: aiohttp's default names Python's and its own version."""
_TLS_ON_PLAIN_PORT: Final = "Received HTTPS traffic on an HTTP port"
_TOO_MANY_HEADERS: Final = "Too many headers"


def _refusal(exc: BaseException | None, status: int) -> web.Response:
    """A problem for a request head the parser refused (see the module's docstring)."""
    request_id = uuid.uuid4().hex
    text = str(getattr(exc, "message", "") or exc or "").strip()
    headers = {"X-Request-ID": request_id, hdrs.SERVER: SERVER_HEADER}
    if isinstance(exc, BadHttpMethod) and _TLS_ON_PLAIN_PORT not in text:
        status, detail = 405, "The request method is not one this server knows."
        headers[hdrs.ALLOW] = STANDARD_METHODS
    elif _TLS_ON_PLAIN_PORT in text:
        detail = "This port speaks plain HTTP, not HTTPS."
    elif isinstance(exc, LineTooLong) and str(exc.args[1]) == str(MAX_REQUEST_LINE_BYTES):
        status, detail = 414, f"The request line is over {MAX_REQUEST_LINE_BYTES} bytes."
    elif isinstance(exc, LineTooLong):  # never echoed: the value may be a credential
        status, detail = 431, f"A request header is over {exc.args[1]} bytes."
    elif _TOO_MANY_HEADERS in text:
        status, detail = 431, "The request has too many header fields."
    else:
        detail = f"Malformed request: {text.splitlines()[0] if text else 'unreadable head'}."
    title = HTTPStatus(status).phrase
    log.debug("refused a request head: %s", text, extra={"request_id": request_id})
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    response = web.Response(
        status=status,
        body=orjson.dumps({**body, "requestId": request_id}),
        content_type="application/problem+json",
        headers=headers,
    )
    response.force_close()
    return response


async def _hide_server_software(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` hook: no software versions to fingerprint (OWASP API8)."""
    response.headers[hdrs.SERVER] = SERVER_HEADER


def _timeout_response(timeout: float) -> bytes:
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": "Request Timeout",
            "status": 408,
            "detail": f"The request head was not received within {timeout:g} s.",
        }
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class HeadTimeoutHandler(web.RequestHandler):
    """aiohttp's connection handler, closing connections whose request head is late."""

    __slots__ = ("_awaiting_head", "_head_started", "_head_timeout", "_head_timer")

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # no request head is complete and none is being handled
        self._head_started = False  # some bytes of the awaited head have arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head and data:
            self._head_started = True
            if self._head_timer is None:
                self._arm()  # the first byte of a keep-alive connection's next request
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a head is complete (or failed to parse: 400)
            self._awaiting_head = self._head_started = False
            self._disarm()

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            # Pipelined heads already parsed are complete; otherwise the next one is awaited
            # (its timer starts with its first byte).
            self._awaiting_head = not self._messages

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)  # a server fault
        return _refusal(exc, status)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self._loop.call_later(self._head_timeout, self._expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if not self._awaiting_head or self.transport is None:
            return
        log.debug("request head not received within %s s: closing", self._head_timeout)
        if self._head_started:
            self.transport.write(_timeout_response(self._head_timeout))
        self.force_close()  # closes the transport after the buffered 408 is sent


class _HeadTimeoutServer(web.Server):
    """A `web.Server` whose connections are `HeadTimeoutHandler`s."""

    def __init__(self, base: web.Server, head_timeout: float) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **base._kwargs,
        )
        self.head_timeout = head_timeout

    def __call__(self) -> web.RequestHandler:
        return HeadTimeoutHandler(
            self, loop=self._loop, head_timeout=self.head_timeout, **self._kwargs
        )


class HeadTimeoutRunner(web.AppRunner):
    """An `AppRunner` whose connections must send each request head within `head_timeout`."""

    def __init__(
        self,
        app: web.Application,
        *,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.head_timeout = head_timeout

    async def _make_server(self) -> web.Server:
        return _HeadTimeoutServer(await super()._make_server(), self.head_timeout)


async def serve_http(
    settings: CommonSettings,
    lifecycle: Lifecycle,
    app: web.Application,
    *,
    reuse_port: bool = False,
    handler_cancellation: bool = False,
) -> None:
    """Serve `app` on the process's port and the ops server on its ops port.

    `reuse_port` (SO_REUSEPORT) lets several processes serve the same ports (the gateway's
    ``--workers``): the kernel spreads new connections over them. `handler_cancellation`
    cancels a handler whose client went away (the gateway: its upstream call is cancelled
    with it); leave it off for handlers that must finish what they started.
    """
    app.middlewares.insert(0, observability_middleware)
    app.on_response_prepare.append(echo_traceparent)  # streamed answers and WebSocket 101s
    app.on_response_prepare.append(_hide_server_software)
    head_timeout = app.get(HEAD_TIMEOUT_KEY, DEFAULT_HEAD_TIMEOUT_SECONDS)
    runner = HeadTimeoutRunner(
        app,
        head_timeout=head_timeout,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.grace_seconds,
        # Room for long query strings (a search `q` of 10,000 characters gets the API's own
        # 400 naming the parameter, not the HTTP parser's plain-text one).
        max_line_size=MAX_REQUEST_LINE_BYTES,
        handler_cancellation=handler_cancellation,
    )

    def ops_runner(ops_app: web.Application) -> web.AppRunner:
        return HeadTimeoutRunner(
            ops_app, head_timeout=head_timeout, access_log=None, handle_signals=False
        )

    async with ops_server(settings, lifecycle, reuse_port=reuse_port, make_runner=ops_runner):
        await runner.setup()
        try:
            await bind_site(
                runner, settings.host, settings.port, settings.port_var, reuse_port=reuse_port
            )
            lifecycle.mark_ready()
            log.info(
                "serving HTTP on %s:%s",
                settings.host,
                settings.port,
                extra={"ops_port": settings.ops_port},
            )
            await lifecycle.wait_for_stop()
        finally:
            await runner.cleanup()
            log.info("HTTP server stopped")
