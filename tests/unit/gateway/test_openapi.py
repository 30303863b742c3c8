"""The OpenAPI 3.1 document generated from the routing table and descriptors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openapi_spec_validator import validate

from gateway.openapi import build_openapi
from gateway.routing import build_routes
from gateway.upstreams import GRPC_SERVICES
from tests.unit.gateway.bookshelf import BOOKSHELF

ROUTES = build_routes([*GRPC_SERVICES, BOOKSHELF])
DOCUMENT: dict[str, Any] = orjson.loads(orjson.dumps(build_openapi(ROUTES)))
SCHEMAS = DOCUMENT["components"]["schemas"]


def operation(method: str, path: str) -> dict[str, Any]:
    result: dict[str, Any] = DOCUMENT["paths"][path][method]
    return result


def params(op: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in op["parameters"] if p["in"] == where}


def test_document_validates_as_openapi_3_1() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    validate(DOCUMENT)  # raises on any structural error


def test_every_route_is_present_with_its_path_parameters() -> None:
    for route in ROUTES:
        op = operation(route.http_method.lower(), route.template.openapi_path)
        assert op["operationId"] == route.operation_id
        path_params = params(op, "path")
        assert set(path_params) == {v.field_path for v in route.template.variables}
        assert all(p["required"] is True for p in path_params.values())
        assert op["responses"]["200"]["content"]["application/json"]["schema"]
        assert "application/problem+json" in op["responses"]["default"]["content"]
    operation_ids = [
        op["operationId"] for item in DOCUMENT["paths"].values() for op in item.values()
    ]
    assert len(operation_ids) == len(set(operation_ids))


def test_gateway_endpoints_are_documented() -> None:
    assert {"/health", "/openapi.json", "/ws/chat"} <= set(DOCUMENT["paths"])


def test_query_parameters_of_a_get_without_body() -> None:
    op = operation("get", "/v1/{parent}/books")
    query = params(op, "query")
    assert set(query) == {
        "pageSize",
        "pageToken",
        "filter.minPages",
        "filter.author.displayName",
        "filter.author.age",
        "tags",
        "kind",
        "onlyActive",
        "publishedAfter",
        "ratio",
        "big",
        "small",
        "minRating",
        "years",
    }  # fmt: skip  (Struct "extra" cannot come from a URL)
    assert query["pageSize"]["schema"] == {"type": "integer", "format": "int32"}
    assert query["big"]["schema"] == {"type": "string", "format": "int64"}
    assert query["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert query["kind"]["schema"]["enum"] == ["KIND_UNSPECIFIED", "NOVEL", "ESSAY"]
    assert query["publishedAfter"]["schema"] == {"type": "string", "format": "date-time"}
    assert params(op, "path")["parent"]["schema"]["pattern"] == "^shelves/[^/]+$"
    assert "requestBody" not in op


def test_bodies() -> None:
    reserve = operation("post", "/v1/books/{id}:reserve")
    schema = reserve["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/gwtest.v1.ReserveBookRequest"}
    assert params(reserve, "query") == {}
    update = operation("patch", "/v1/{book.name}")
    assert update["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/gwtest.v1.Book"
    }
    assert set(params(update, "query")) == {"updateMask"}
    title = operation("get", "/v1/books/{id}/title")
    assert title["responses"]["200"]["content"]["application/json"]["schema"] == {"type": "string"}


def test_message_schemas_follow_the_proto3_json_mapping() -> None:
    book = SCHEMAS["gwtest.v1.Book"]
    props = book["properties"]
    assert book["type"] == "object"
    # Every field but a REQUIRED one also takes null (the mapping reads it as the default).
    assert props["pages"] == {"type": ["string", "null"], "format": "int64"}
    assert props["isbn"] == {"type": ["string", "null"], "format": "int64"}
    assert props["publishedAt"] == {
        "type": ["string", "null"],
        "format": "date-time",
        "readOnly": True,
    }
    assert props["id"] == {"type": ["string", "null"], "readOnly": True}
    assert props["secret"] == {"type": ["string", "null"], "writeOnly": True}
    assert props["extra"] == {"type": ["object", "null"], "additionalProperties": True}
    assert props["anything"] == {}
    assert props["kind"] == {
        "type": ["string", "null"],
        "enum": ["KIND_UNSPECIFIED", "NOVEL", "ESSAY", None],
    }
    assert props["tags"] == {"type": ["array", "null"], "items": {"type": "string"}}
    assert props["ratings"] == {
        "type": ["object", "null"],
        "additionalProperties": {"type": "integer", "format": "int32"},
    }
    assert props["author"] == {
        "anyOf": [{"$ref": "#/components/schemas/gwtest.v1.Author"}, {"type": "null"}]
    }
    assert props["edition"]["type"] == ["integer", "null"]
    assert props["cover"] == {"type": ["string", "null"], "format": "byte"}
    assert props["title"] == {"type": "string"}  # REQUIRED: null would be refused
    assert book["required"] == ["title"]
    assert "gwtest.v1.Author" in SCHEMAS


@pytest.mark.parametrize("name", ["Problem", "FieldViolation"])
def test_problem_schemas(name: str) -> None:
    assert SCHEMAS[name]["type"] == "object"
    assert SCHEMAS["Problem"]["properties"]["errors"]["items"] == {
        "$ref": "#/components/schemas/FieldViolation"
    }


def test_real_protos_field_behaviors() -> None:
    register = SCHEMAS["users.v1.RegisterRequest"]
    assert "email" in register["required"]
    assert register["properties"]["password"].get("writeOnly") is True
    assert SCHEMAS["catalog.v1.Product"]["properties"]["id"]["readOnly"] is True


def test_every_operation_declares_who_may_call_it() -> None:
    """`security` and `x-mesh-access` follow each method's (mesh.v1.access) option."""
    expected = {
        "users.v1.UsersService.Login": ("public", []),
        "users.v1.UsersService.GetMe": ("user", [{"bearer": []}]),
        "users.v1.UsersService.GetUser": ("admin", [{"bearer": ["admin"]}]),
        "gateway.Health": ("public", []),
        "gateway.ChatWebSocket": ("user", [{"bearer": []}]),
    }
    seen = {}
    for item in DOCUMENT["paths"].values():
        for op in item.values():
            assert op["x-mesh-access"] in ("public", "user", "admin", "closed"), op["operationId"]
            seen[op["operationId"]] = (op["x-mesh-access"], op["security"])
    assert {k: seen[k] for k in expected} == expected
    assert DOCUMENT["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
