"""The routing table, built at start-up from the protos' `google.api.http` annotations.

Every method of a registered service that carries an http rule (and each of its
``additional_bindings``) becomes a `Route`. Matching is aiohttp's router: each template
compiles to a resource whose variables are regex-constrained (`gateway.path_template`), so
the router answers 404 and 405-with-``Allow`` by itself and the table costs nothing to
maintain. aiohttp tries the most specific literal prefix first, and resources sharing a
prefix in registration order; templates never overlap ambiguously because a variable
cannot cross a ``/`` or swallow a ``:verb``.

A proto that binds a missing field, or a malformed template, fails start-up with a
`RoutingError` naming the method.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from google.api import annotations_pb2, http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from gateway.fields import field_named, is_repeated, is_scalar_like, resolve_field_path
from gateway.path_template import PathTemplate, TemplateError, parse_template
from mesh.auth.access import method_access


class RoutingError(ValueError):
    """A service's http annotations cannot be turned into routes."""


@dataclass(frozen=True, slots=True)
class UpstreamService:
    """A gRPC service the gateway exposes, and the upstream (settings name) serving it."""

    upstream: str
    descriptor: ServiceDescriptor


@dataclass(frozen=True)
class Route:
    upstream: str
    method: MethodDescriptor
    http_method: str
    template: PathTemplate
    body: str  # "" (none), "*" (the whole request) or a top-level request field name
    response_body: str  # "" (the whole response) or a top-level response field name
    binding: int  # 0 for the main rule, n for additional_bindings[n - 1]

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def operation_id(self) -> str:
        base = f"{self.method.containing_service.full_name}.{self.method.name}"
        return f"{base}.{self.binding}" if self.binding else base

    @cached_property
    def access(self) -> int:
        """Who may call it (mesh.v1.Access); unspecified means nobody (deny by default)."""
        return method_access(self.method)

    @cached_property
    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    @cached_property
    def response_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.output_type)


_PATTERNS = ("get", "put", "post", "delete", "patch")


def _verb_and_path(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind in _PATTERNS:
        return kind.upper(), str(getattr(rule, kind))
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    raise RoutingError("http rule without a pattern")


def _check(route: Route) -> None:
    request = route.method.input_type
    for variable in route.template.variables:
        try:
            fields = resolve_field_path(request, variable.field_path)
        except KeyError as missing:
            raise RoutingError(
                f"path variable {variable.field_path!r}: no field {missing}"
            ) from None
        if is_repeated(fields[-1]) or not is_scalar_like(fields[-1]):
            raise RoutingError(f"path variable {variable.field_path!r} is not a singular scalar")
    if route.body not in ("", "*") and field_named(request, route.body) is None:
        raise RoutingError(f"body field {route.body!r} is not a field of {request.full_name}")
    if route.response_body and field_named(route.method.output_type, route.response_body) is None:
        raise RoutingError(f"response_body {route.response_body!r} is not a response field")
    if route.http_method == "GET" and route.body:
        raise RoutingError("GET cannot have a body")


def _rules(method: MethodDescriptor) -> Iterator[http_pb2.HttpRule]:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return
    rule = options.Extensions[annotations_pb2.http]
    yield rule
    yield from rule.additional_bindings


def routes_for(upstream: str, service: ServiceDescriptor) -> list[Route]:
    routes = []
    for method in service.methods:
        if method.client_streaming or method.server_streaming:
            continue  # JSON transcoding covers unary methods only
        for binding, rule in enumerate(_rules(method)):
            where = f"{service.full_name}.{method.name}"
            try:
                http_method, path = _verb_and_path(rule)
                route = Route(
                    upstream=upstream,
                    method=method,
                    http_method=http_method,
                    template=parse_template(path),
                    body=rule.body,
                    response_body=rule.response_body,
                    binding=binding,
                )
                _check(route)
            except (RoutingError, TemplateError) as error:
                raise RoutingError(f"{where}: {error}") from None
            routes.append(route)
    return routes


def build_routes(services: Sequence[UpstreamService]) -> tuple[Route, ...]:
    """All routes of `services`; a (method, template) pair declared twice is an error."""
    routes = [r for s in services for r in routes_for(s.upstream, s.descriptor)]
    seen: dict[tuple[str, str], str] = {}
    for route in routes:
        key = (route.http_method, route.template.aiohttp_path)
        if key in seen:
            raise RoutingError(
                f"{route.operation_id}: {route.http_method} {route.template.template} "
                f"is already bound by {seen[key]}"
            )
        seen[key] = route.operation_id
    return tuple(routes)
