"""The public API as the running gateway describes it: every operation of ``/openapi.json``.

The security tests walk this list instead of a list of their own, so a route added to a proto
(or to chat's REST table) is attacked the day it appears, and a route a test has no case for
fails that test with a message saying what to add. Each operation carries its access level
from the document's ``x-mesh-access`` (``public``, ``user``, ``admin``, ``closed``), which the
gateway derives from the protos' ``(mesh.v1.access)`` options.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.e2e.client import call

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_VARIABLE = re.compile(r"\{([^}]+)\}")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the OpenAPI template, e.g. "/api/v1/products/{id}:reserve"
    operation_id: str
    access: str
    spec: dict[str, Any]
    document: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.operation_id})"

    @property
    def variables(self) -> list[str]:
        return _VARIABLE.findall(self.path)

    @property
    def query(self) -> list[str]:
        return [p["name"] for p in self.spec.get("parameters", []) if p["in"] == "query"]

    @property
    def has_body(self) -> bool:
        return "requestBody" in self.spec

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS

    def url(self, base: str, **values: str) -> str:
        """The URL with every ``{variable}`` replaced (percent-encoded) by `values`."""
        missing = set(self.variables) - set(values)
        assert not missing, f"{self}: no value for {sorted(missing)}"
        path = _VARIABLE.sub(lambda m: urllib.parse.quote(values[m[1]], safe=""), self.path)
        return base + path

    def body_schema(self) -> dict[str, Any]:
        """The JSON schema of the request body, references resolved one level deep."""
        if not self.has_body:
            return {}
        schema = self.spec["requestBody"]["content"]["application/json"]["schema"]
        return self.resolve(schema)

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """`schema` with a ``$ref`` followed (also the one of an optional member's
        ``anyOf: [{$ref}, {type: null}]``)."""
        choices = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
        if len(choices) == 1:
            schema = choices[0]
        ref = schema.get("$ref")
        if ref is None:
            return schema
        name = ref.removeprefix("#/components/schemas/")
        resolved: dict[str, Any] = self.document["components"]["schemas"][name]
        return resolved

    @staticmethod
    def read_only(schema: dict[str, Any]) -> bool:
        """Whether a member's schema says readOnly (beside its ``$ref`` or its ``anyOf``)."""
        return bool(schema.get("readOnly")) or any(
            s.get("readOnly") for s in schema.get("anyOf", [])
        )

    def body_properties(self) -> dict[str, dict[str, Any]]:
        """The body's members by name (empty when the body is not an object)."""
        properties: dict[str, dict[str, Any]] = self.body_schema().get("properties", {})
        return properties


async def operations(http: aiohttp.ClientSession, gateway: str) -> list[Operation]:
    """Every HTTP operation the running gateway documents (the WebSocket upgrade excluded)."""
    status, _, document = await call(http, "GET", f"{gateway}/openapi.json")
    assert status == 200
    found = []
    for path, item in document["paths"].items():
        for method, spec in item.items():
            if method.upper() not in {"GET", "HEAD", *WRITE_METHODS}:
                continue
            access = spec.get("x-mesh-access")
            assert access in ("public", "user", "admin", "closed"), (
                f"{method.upper()} {path} does not say who may call it (x-mesh-access)"
            )
            if spec["operationId"] == "gateway.ChatWebSocket":
                continue  # an upgrade, not a request/response operation: tested on its own
            found.append(
                Operation(method.upper(), path, spec["operationId"], access, spec, document)
            )
    assert found, "the OpenAPI document lists no operation"
    return found
