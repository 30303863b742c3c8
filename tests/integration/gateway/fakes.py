"""Test upstreams for the gateway: gRPC servicers of the real (and test) protos, a chat app.

They exist to exercise the gateway's transcoding, status mapping, health and WebSocket
proxying; the real services are tested end to end elsewhere.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import grpc
import grpc.aio
import orjson
from aiohttp import WSMsgType, web
from google.protobuf import message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mesh.auth.keys import SigningKey, public_jwk
from mesh.auth.tokens import TokenIssuer, TokenSettings
from mesh.errors import FieldError, InvalidArgument, ResourceExhausted, to_grpc_status
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from protos.users.v1 import users_pb2, users_pb2_grpc
from tests.integration.services.users.support import new_key
from tests.unit.gateway.bookshelf import SERVICE as SHELF_SERVICE
from tests.unit.gateway.bookshelf import new

SLOW_SECONDS = 3.0


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    """GetProduct: "p1" exists; "status-<CODE>" fails with that code; "slow" is late."""

    def __init__(self) -> None:
        self.calls = 0
        self.metadata: list[dict[str, str | bytes]] = []

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> catalog_pb2.Product:
        self.calls += 1
        self.metadata.append(dict(context.invocation_metadata() or ()))
        if request.id == "p1":
            product = catalog_pb2.Product(
                id="p1", sku="W-1", name="Widget", price_cents=1234, currency="EUR", stock=0
            )
            product.attributes.update({"color": "red"})
            product.created_at.FromSeconds(1_700_000_000)
            return product
        if request.id == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if request.id == "boom":
            raise RuntimeError("secret internals: db password is hunter2")
        if request.id == "invalid":
            error = InvalidArgument(
                "id is malformed", field_errors=(FieldError("id", "must be a UUID"),)
            )
            await context.abort_with_status(to_grpc_status(error))
        if request.id == "busy":
            await context.abort_with_status(
                to_grpc_status(ResourceExhausted("slow down", retry_after_seconds=2.2))
            )
        if request.id.startswith("status-"):
            code = grpc.StatusCode[request.id.removeprefix("status-")]
            await context.abort(code, f"failed with {code.name}")
        await context.abort(grpc.StatusCode.NOT_FOUND, f"product {request.id!r} not found")
        raise AssertionError("unreachable")


class ShelfServicer:
    """Every gwtest.v1.ShelfService method: records the request, answers a canned message."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.requests: dict[str, Message] = {}

    def respond(self, method: str, request: Any) -> Any:
        if method in ("GetBook", "GetBookTitle"):
            book = new(
                "Book", name=f"shelves/s1/books/{request.id}", id=request.id, title="Dune",
                pages=412, tags=["sf"], kind=1, isbn=2**63 + 1,
            )  # fmt: skip
            book.ratings["alice"] = 5
            book.published_at.FromSeconds(0)
            return book
        if method == "ReserveBook":
            return new("Book", id=request.id, title=f"{request.user}:{request.days}")
        if method == "UpdateBook":
            return request.book
        if method == "GetShelf":
            return new("Shelf", name=request.name)
        if method == "ListBooks":
            return new("ListBooksResponse")
        if method == "DeleteBook":
            return new("Book")
        return new("ArchiveAllResponse", archived=len(request.ids))

    def handler(self) -> grpc.GenericRpcHandler:
        handlers = {}
        for method in SHELF_SERVICE.methods:
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)

            async def behave(request: Any, context: Any, name: str = method.name) -> Message:
                self.calls[name] += 1
                self.requests[name] = request
                return self.respond(name, request)

            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                behave,
                request_deserializer=request_class.FromString,
                response_serializer=response_class.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SHELF_SERVICE.full_name, handlers)


class ControlledShelf(ShelfServicer):
    """gwtest.v1.ShelfService whose behaviour each test sets, for the traffic-policy tests.

    Every method answers as `ShelfServicer` does, unless `fail_with` is a status code (every
    call fails with it) or `hang` is set (calls wait until `gate` opens, or forever: until
    the caller cancels them or their deadline passes). Counts the calls per method
    (`calls`, with `called` set on each), the calls that ended by cancellation or deadline
    (`cancelled`, with `cancelled_event` set on each) and the deadline each call arrived
    with (`time_left`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fail_with: grpc.StatusCode | None = None
        self.hang = False
        self.gate = asyncio.Event()
        self.called = asyncio.Event()
        self.cancelled = 0
        self.cancelled_event = asyncio.Event()
        self.time_left: list[float | None] = []

    def reset(self) -> None:
        self.calls.clear()
        self.fail_with, self.hang, self.cancelled = None, False, 0
        self.gate.clear()
        self.called.clear()
        self.cancelled_event.clear()
        self.time_left.clear()

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        handlers = {}
        for method in SHELF_SERVICE.methods:
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)

            async def behave(
                request: Any, context: grpc.aio.ServicerContext[Any, Any], name: str = method.name
            ) -> Message:
                self.calls[name] += 1
                self.called.set()
                self.time_left.append(context.time_remaining())
                if self.hang:
                    try:
                        await self.gate.wait()
                    except asyncio.CancelledError:
                        self.cancelled += 1
                        self.cancelled_event.set()
                        raise
                if self.fail_with is not None:
                    await context.abort(self.fail_with, f"failed with {self.fail_with.name}")
                answer: Message = self.respond(name, request)
                return answer

            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                behave,
                request_deserializer=request_class.FromString,
                response_serializer=response_class.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SHELF_SERVICE.full_name, handlers)


class RestartableServer:
    """A grpc.aio server for one generic handler that can be stopped and started again on
    the same port (an upstream that goes down and comes back)."""

    def __init__(self, handler: grpc.GenericRpcHandler[Any, Any]) -> None:
        self._handler = handler
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self._handler,))
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None


async def start_grpc_server(*register: Any) -> tuple[grpc.aio.Server, str, Any]:
    """A grpc.aio server on a free port with a SERVING health service; (server, address)."""
    server = grpc.aio.server()
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for add in register:
        add(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, f"127.0.0.1:{port}", health_servicer


class ControlledChat:
    """A chat replica's REST routes (``/api/v1/chat/...``) answering with `status` (and a
    JSON body); counts the requests that reach it."""

    def __init__(self) -> None:
        self.status = 200
        self.calls = 0

    async def _answer(self, request: web.Request) -> web.Response:
        self.calls += 1
        return web.json_response({"status": self.status}, status=self.status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/v1/chat/{tail:.*}", self._answer)
        return app


CHAT_CLOSES = web.AppKey("chat_closes", asyncio.Queue[tuple[int | None, str]])


async def _chat_ready(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


async def _chat_ws(request: web.Request) -> web.StreamResponse:
    authorization = request.headers.get("Authorization", "")
    if authorization == "Bearer bad":
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if request.headers.get("Origin") == "https://evil.example":
        raise web.HTTPForbidden()
    ws = web.WebSocketResponse(protocols=("chat.v1",))
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data)
        elif message.data == "whoami":
            await ws.send_bytes(
                orjson.dumps(
                    {
                        "authorization": authorization,
                        "origin": request.headers.get("Origin"),
                        "requestId": request.headers.get("X-Request-ID"),
                        "query": dict(request.query),
                        "protocol": ws.ws_protocol,
                    }
                )
            )
        elif message.data.startswith("close:"):
            await ws.close(code=int(message.data.removeprefix("close:")), message=b"bye")
        elif message.data == "drop":
            await request.app[CHAT_CLOSES].put((None, request.headers.get("X-Request-ID", "")))
            assert request.transport is not None
            request.transport.abort()  # vanish without a close frame
            return ws
        else:
            await ws.send_str(message.data)
    await request.app[CHAT_CLOSES].put((ws.close_code, request.headers.get("X-Request-ID", "")))
    return ws


def chat_app() -> web.Application:
    app = web.Application()
    app[CHAT_CLOSES] = asyncio.Queue()
    app.router.add_get("/health/ready", _chat_ready)
    app.router.add_get("/ws/chat", _chat_ws)
    return app


# A signing key, a user's token signed with it, and the users service part that publishes it.
KEY = new_key()
TOKEN = TokenIssuer([KEY], TokenSettings()).issue("u-1", ["user"])


class JwksServicer(users_pb2_grpc.UsersServiceServicer):
    """Only GetJwks: what a gateway needs from users to verify tokens."""

    def __init__(self, *keys: SigningKey) -> None:
        self._jwks = users_pb2.Jwks(keys=[users_pb2.Jwk(**public_jwk(k)) for k in keys])

    async def GetJwks(
        self, request: users_pb2.GetJwksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> users_pb2.Jwks:
        return self._jwks
