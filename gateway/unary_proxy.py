"""The handler for one transcoded route: HTTP/JSON in, one gRPC call, JSON out."""

from __future__ import annotations

import grpc
import grpc.aio
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from gateway import conditional
from gateway.body import NO_BODY, read_json_body
from gateway.keys import SETTINGS_KEY, UPSTREAMS_KEY, VERIFIER_KEY
from gateway.routing import Route
from gateway.transcoding import Transcoder
from mesh.auth.access import authorize
from mesh.errors import ServiceError
from mesh.problem import problem_from_rpc_error, problem_from_service_error
from mesh.request_id import REQUEST_ID_METADATA, request_id_of

AUTHORIZATION_METADATA = "authorization"
# Set by the gateway from the connection; a client's own value never reaches a service.
CLIENT_ADDRESS_METADATA = "x-client-address"


def unary_handler(route: Route) -> Handler:
    transcoder = Transcoder(route)

    async def handle(request: web.Request) -> web.StreamResponse:
        settings = request.app[SETTINGS_KEY]
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        try:  # before the body is read: an unauthorised caller costs no upload
            await authorize(route.access, authorization, request.app[VERIFIER_KEY])
        except ServiceError as exc:
            raise problem_from_service_error(exc) from None
        body = await read_json_body(request, settings.body_limit_bytes) if route.body else NO_BODY
        message = transcoder.request_message(
            path=route.template.bindings(request.match_info), query=request.query, body=body
        )
        metadata: tuple[tuple[str, str], ...] = (
            (REQUEST_ID_METADATA, request_id_of(request) or ""),
            (CLIENT_ADDRESS_METADATA, request.remote or ""),
        )
        if authorization:  # the service verifies it again: it never trusts the gateway's word
            metadata += ((AUTHORIZATION_METADATA, authorization),)
        metadata += conditional.forwarded_metadata(request)  # If-Match on writes
        call = request.app[UPSTREAMS_KEY].unary(route)
        try:
            pending = call(message, timeout=settings.upstream_timeout_seconds, metadata=metadata)
            response = await pending
            etag = conditional.response_etag(
                await pending.initial_metadata(), await pending.trailing_metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise problem_from_rpc_error(error, upstream=route.upstream) from None
        if conditional.not_modified(request, etag):  # If-None-Match matched: 304, no body
            return conditional.not_modified_response(etag)
        return conditional.json_response(transcoder.response_json(response), etag)

    handle.__name__ = handle.__qualname__ = route.operation_id
    return handle
