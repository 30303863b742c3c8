"""The OpenAPI 3.1 document, generated from the routing table and the message descriptors.

Schemas follow the proto3 JSON mapping: lowerCamelCase names, 64-bit integers as strings
(``format: int64``), Timestamp as a date-time string, Duration and FieldMask as strings,
Struct as an object, Value as any JSON, wrappers as nullable primitives, enums as their
names, repeated fields as arrays, maps as objects with ``additionalProperties``.
google.api.field_behavior becomes ``readOnly`` (OUTPUT_ONLY), ``writeOnly`` (INPUT_ONLY)
and ``required`` (REQUIRED). A field that is not REQUIRED also takes ``null``: the mapping
reads null as the field's default, so the gateway accepts it (responses never hold null).
Proto comments are not included: the generated modules carry no source info. Built once at
start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

import mesh
from gateway.fields import behaviors, field_named, is_map, is_repeated, json_path
from gateway.routing import Route
from mesh.auth.access import ADMIN, PUBLIC, USER
from mesh.problem import PROBLEM_CONTENT_TYPE

Schema = dict[str, Any]

OPENAPI_VERSION: Final = "3.1.0"
_REF: Final = "#/components/schemas/"
_JSON: Final = "application/json"
_OPERATION_METHODS: Final = frozenset({"get", "put", "post", "delete", "options", "head", "patch"})
_QUERY_DEPTH: Final = 3

_SCALARS: Final[dict[int, Schema]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}

_WELL_KNOWN: Final[dict[str, Schema]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.NullValue": {"type": "null"},
    "google.protobuf.DoubleValue": {"type": ["number", "null"], "format": "double"},
    "google.protobuf.FloatValue": {"type": ["number", "null"], "format": "float"},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "format": "int64"},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "format": "byte"},
}

_PROBLEM_SCHEMAS: Final[dict[str, Schema]] = {
    "Problem": {
        "type": "object",
        "description": "An RFC 9457 problem details document.",
        "properties": {
            "type": {"type": "string", "format": "uri-reference"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 100, "maximum": 599},
            "detail": {"type": "string"},
            "instance": {"type": "string", "format": "uri-reference"},
            "requestId": {"type": "string"},
            "traceId": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "errors": {"type": "array", "items": {"$ref": _REF + "FieldViolation"}},
        },
        "required": ["type", "title", "status"],
    },
    "FieldViolation": {
        "type": "object",
        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
        "required": ["field", "message"],
    },
}


# The bearer scheme every signed-in operation declares. Role names in an http scheme's
# requirement are allowed by OpenAPI 3.1 ("role names which are required for the execution").
BEARER_SCHEME: Final = "bearer"
SECURITY_SCHEMES: Final[dict[str, Schema]] = {
    BEARER_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An EdDSA access token from /api/v1/auth/login (15 minutes).",
    }
}
ACCESS_EXTENSION: Final = "x-mesh-access"
"""Who may call an operation: ``public``, ``user``, ``admin`` or ``closed`` (nobody)."""


def access_fields(access: int) -> Schema:
    """An operation's ``security`` and ``x-mesh-access``, from its (mesh.v1.access) level."""
    if access == PUBLIC:
        return {"security": [], ACCESS_EXTENSION: "public"}
    if access == USER:
        return {"security": [{BEARER_SCHEME: []}], ACCESS_EXTENSION: "user"}
    if access == ADMIN:
        return {"security": [{BEARER_SCHEME: ["admin"]}], ACCESS_EXTENSION: "admin"}
    return {"security": [{BEARER_SCHEME: ["nobody"]}], ACCESS_EXTENSION: "closed"}


def _problem(description: str) -> Schema:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": _REF + "Problem"}}},
    }


class SchemaBuilder:
    """JSON Schemas of messages by the proto3 JSON mapping, collected as components."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def message(self, descriptor: Descriptor) -> Schema:
        """A reference to `descriptor`'s component (or the inline form of a well-known type)."""
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        name = descriptor.full_name
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursive messages refer to it
            self.schemas[name] = self._object(descriptor)
        return {"$ref": _REF + name}

    def field(self, field: FieldDescriptor) -> Schema:
        if is_map(field) and field.message_type is not None:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        if is_repeated(field):
            return {"type": "array", "items": self.single(field)}
        return self.single(field)

    def single(self, field: FieldDescriptor) -> Schema:
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            if field.enum_type.full_name == "google.protobuf.NullValue":
                return {"type": "null"}
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        return dict(_SCALARS[field.type])

    def _object(self, descriptor: Descriptor) -> Schema:
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for field in descriptor.fields:
            schema = self.field(field)
            marks = behaviors(field)
            if field_behavior_pb2.OUTPUT_ONLY in marks:
                schema["readOnly"] = True
            if field_behavior_pb2.INPUT_ONLY in marks:
                schema["writeOnly"] = True
            if field_behavior_pb2.REQUIRED in marks:
                required.append(field.json_name)
            else:
                schema = _nullable(schema)
            properties[field.json_name] = schema
        result: Schema = {"type": "object", "title": descriptor.name, "properties": properties}
        if required:
            result["required"] = required
        return result


def _nullable(schema: Schema) -> Schema:
    """`schema` or null (proto3 JSON: null sets any field to its default value)."""
    kind = schema.get("type")
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    if kind is None or kind == "null" or (isinstance(kind, list) and "null" in kind):
        return schema  # any JSON value, or null already
    nullable = {**schema, "type": [*(kind if isinstance(kind, list) else [kind]), "null"]}
    if "enum" in nullable:
        nullable["enum"] = [*nullable["enum"], None]
    return nullable


def _query_parameters(
    builder: SchemaBuilder,
    descriptor: Descriptor,
    bound: set[str],
    prefix: tuple[FieldDescriptor, ...] = (),
) -> list[Schema]:
    parameters: list[Schema] = []
    for field in descriptor.fields:
        path = (*prefix, field)
        name = json_path(path)
        marks = behaviors(field)
        if name in bound or field_behavior_pb2.OUTPUT_ONLY in marks or is_map(field):
            continue
        message = field.message_type
        if message is not None:
            wkt = _WELL_KNOWN.get(message.full_name)
            if wkt is None:
                if not is_repeated(field) and len(path) < _QUERY_DEPTH:
                    parameters += _query_parameters(builder, message, bound, path)
                continue
            if wkt.get("type") in ("object", "array", None):
                continue  # Struct, Value, ListValue, Any, Empty cannot come from a URL
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": field_behavior_pb2.REQUIRED in marks and not prefix,
                "schema": builder.field(field),
            }
        )
    return parameters


def _operation(builder: SchemaBuilder, route: Route) -> Schema:
    request = route.method.input_type
    parameters: list[Schema] = []
    bound: set[str] = set()
    for variable in route.template.variables:
        fields = []
        current: Descriptor | None = request
        for part in variable.field_path.split("."):
            field = field_named(current, part) if current is not None else None
            assert field is not None  # checked when the routes were built
            fields.append(field)
            current = field.message_type
        bound.add(json_path(tuple(fields)))
        schema = builder.single(fields[-1])
        if "/" in variable.pattern:
            schema = {**schema, "pattern": f"^{variable.pattern}$"}
        parameters.append(
            {"name": variable.field_path, "in": "path", "required": True, "schema": schema}
        )
    responses: dict[str, Schema] = {}
    operation: Schema = {
        "operationId": route.operation_id,
        "tags": [route.method.containing_service.full_name],
        "summary": route.method.name,
        "parameters": parameters,
        **access_fields(route.access),
    }
    if route.body == "*":
        operation["requestBody"] = {
            "required": True,
            "content": {_JSON: {"schema": builder.message(request)}},
        }
    else:
        if route.body:
            body_field = field_named(request, route.body)
            assert body_field is not None
            bound.add(body_field.json_name)
            operation["requestBody"] = {
                "required": True,
                "content": {_JSON: {"schema": builder.field(body_field)}},
            }
        parameters += _query_parameters(builder, request, bound)
    output = route.method.output_type
    response_field = field_named(output, route.response_body) if route.response_body else None
    response_schema = builder.field(response_field) if response_field else builder.message(output)
    responses["200"] = {"description": "OK", "content": {_JSON: {"schema": response_schema}}}
    responses["400"] = _problem("The request is invalid; `errors` names the fields.")
    if route.body:
        responses["413"] = _problem("The request body is over the size limit.")
        responses["415"] = _problem("The request body is not JSON.")
    responses["503"] = _problem("The upstream service is unavailable.")
    responses["default"] = _problem("An error, mapped from the upstream's gRPC status.")
    operation["responses"] = responses
    return operation


def _gateway_paths() -> dict[str, Schema]:
    health_response = {
        "content": {_JSON: {"schema": {"type": "object", "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "upstreams": {"type": "object", "additionalProperties": {"type": "object"}},
        }}}},
    }  # fmt: skip
    return {
        "/health": {"get": {
            "operationId": "gateway.Health",
            "tags": ["gateway"],
            **access_fields(PUBLIC),
            "summary": "The state of every upstream, probed now.",
            "responses": {
                "200": {"description": "Every upstream serves.", **health_response},
                "503": {"description": "Some upstream does not serve.", **health_response},
            },
        }},
        "/openapi.json": {"get": {
            "operationId": "gateway.OpenApi",
            "tags": ["gateway"],
            **access_fields(PUBLIC),
            "summary": "This document.",
            "responses": {"200": {"description": "OK", "content": {_JSON: {"schema": {}}}}},
        }},
        "/ws/chat": {"get": {
            "operationId": "gateway.ChatWebSocket",
            "tags": ["gateway"],
            **access_fields(USER),
            "summary": "A WebSocket to chat (subprotocols and close codes pass through).",
            "responses": {
                "101": {"description": "Switching to the WebSocket protocol."},
                "default": _problem("The chat service refused the handshake or is unavailable."),
            },
        }},
    }  # fmt: skip


def build_openapi(routes: Sequence[Route], *, title: str = "The mesh API") -> dict[str, Any]:
    builder = SchemaBuilder()
    paths: dict[str, Schema] = {}
    for route in routes:
        method = route.http_method.lower()
        if method in _OPERATION_METHODS:
            paths.setdefault(route.template.openapi_path, {})[method] = _operation(builder, route)
    paths.update(_gateway_paths())
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": mesh.__version__},
        "paths": paths,
        "components": {
            "schemas": {**builder.schemas, **_PROBLEM_SCHEMAS},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
