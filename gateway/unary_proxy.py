"""The handler for one transcoded route: HTTP/JSON in, one gRPC call, JSON out."""

from __future__ import annotations

import grpc
import grpc.aio
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from gateway import conditional
from gateway.body import NO_BODY, read_json_body
from gateway.client_address import client_address
from gateway.deadline import request_deadline
from gateway.keys import RATE_LIMITER_KEY, SETTINGS_KEY, UPSTREAMS_KEY, VERIFIER_KEY
from gateway.policy import RoutePolicy
from gateway.ratelimit import event_count
from gateway.routing import Route
from gateway.transcoding import Transcoder
from mesh.auth.access import authorize
from mesh.errors import ServiceError
from mesh.problem import ProblemError, problem_from_rpc_error, problem_from_service_error
from mesh.request_id import REQUEST_ID_METADATA, request_id_of

AUTHORIZATION_METADATA = "authorization"
# Set by the gateway from the connection; a client's own value never reaches a service.
CLIENT_ADDRESS_METADATA = "x-client-address"


def unary_handler(route: Route, policy: RoutePolicy) -> Handler:
    transcoder = Transcoder(route)
    rate_limit = policy.rate_limit

    async def handle(request: web.Request) -> web.StreamResponse:
        deadline = request_deadline(request, policy.timeout_seconds)
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        try:  # before the body is read: an unauthorised caller costs no upload
            caller = await authorize(route.access, authorization, request.app[VERIFIER_KEY])
        except ServiceError as exc:
            raise problem_from_service_error(exc) from None
        if rate_limit is not None and rate_limit.cost == "requests":  # before the upload too
            await request.app[RATE_LIMITER_KEY].admit(request, rate_limit, caller)
        if rate_limit is not None and rate_limit.cost == "events":
            try:
                body = await read_json_body(request, policy.body_limit_bytes)
            except ProblemError:  # an unreadable body still costs one unit, like an empty one
                await request.app[RATE_LIMITER_KEY].admit(request, rate_limit, caller)
                raise
            await request.app[RATE_LIMITER_KEY].admit(
                request, rate_limit, caller, cost=event_count(body)
            )
        else:
            body = await read_json_body(request, policy.body_limit_bytes) if route.body else NO_BODY
        message = transcoder.request_message(
            path=route.template.bindings(request.match_info), query=request.query, body=body
        )
        trusted_proxies = request.app[SETTINGS_KEY].rate_limits.trusted_proxies
        metadata: tuple[tuple[str, str], ...] = (
            (REQUEST_ID_METADATA, request_id_of(request) or ""),
            (CLIENT_ADDRESS_METADATA, client_address(request, trusted_proxies)),
        )
        if authorization:  # the service verifies it again: it never trusts the gateway's word
            metadata += ((AUTHORIZATION_METADATA, authorization),)
        metadata += conditional.forwarded_metadata(request)  # If-Match on writes
        try:
            reply = await request.app[UPSTREAMS_KEY].call(route, message, metadata, deadline)
        except grpc.aio.AioRpcError as error:
            raise problem_from_rpc_error(error, upstream=route.upstream) from None
        response = reply.message
        etag = conditional.response_etag(reply.initial_metadata, reply.trailing_metadata)
        if conditional.not_modified(request, etag):  # If-None-Match matched: 304, no body
            return conditional.not_modified_response(etag)
        return conditional.json_response(transcoder.response_json(response), etag)

    handle.__name__ = handle.__qualname__ = route.operation_id
    return handle
