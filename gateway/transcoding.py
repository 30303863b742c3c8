"""JSON <-> proto for one route, by the proto3 JSON mapping (`google.protobuf.json_format`).

A request message is assembled as one JSON document and parsed once with `ParseDict`
(unknown fields rejected): the body (the whole document for ``body: "*"``, one field's
value for ``body: "field"``), then the path variables, then - unless the body is ``*`` -
the query string: ``?a.b=1&tags=x&tags=y`` by JSON or proto names, converted by the
target field's type. Path variables override what the body says (as in grpc-gateway).
Every failure is a 400 problem whose ``errors[].field`` names the JSON field (or, for a
query value, the parameter as the client wrote it).

Responses print every field without presence, so clients see zero values; 64-bit integers
are strings, as the mapping says.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final

import orjson
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from multidict import MultiMapping

from gateway.body import NO_BODY
from gateway.fields import (
    STRING_WKTS,
    WRAPPERS,
    field_named,
    is_map,
    is_repeated,
    json_path,
    resolve_field_path,
)
from gateway.routing import Route
from mesh.errors import FieldError
from mesh.problem import ProblemError

_INT_RANGES: Final = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_FLOAT_TYPES: Final = (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE)
_FLOAT_WORDS: Final = frozenset({"NaN", "Infinity", "-Infinity"})
_TRUE: Final = frozenset({"true", "1"})
_FALSE: Final = frozenset({"false", "0"})


def scalar_from_string(field: FieldDescriptor, raw: str) -> object:
    """A URL string as the JSON value of `field`; ValueError with a client-facing message."""
    if field.message_type is not None:
        name = field.message_type.full_name
        if name in WRAPPERS:
            return scalar_from_string(field.message_type.fields_by_name["value"], raw)
        if name in STRING_WKTS:
            return raw  # ParseDict checks the form (RFC 3339, "1.5s", "a,b")
        raise ValueError("cannot be set from the URL")
    cpp_type = field.cpp_type
    if cpp_type in _INT_RANGES:
        if not re.fullmatch(r"-?[0-9]+", raw):
            raise ValueError(f"expected an integer, got {raw!r}")
        low, high = _INT_RANGES[cpp_type]
        if len(raw.lstrip("-").lstrip("0")) > 20:  # past 2**64; int() refuses over 4300 digits
            raise ValueError(f"out of range [{low}, {high}]")
        number = int(raw)
        if not low <= number <= high:
            raise ValueError(f"{number} is out of range [{low}, {high}]")
        return number
    if cpp_type in _FLOAT_TYPES:
        if raw in _FLOAT_WORDS:
            return raw
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, NaN, Infinity or -Infinity, got {raw!r}")
        return value
    if cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if field.enum_type is not None:
        enum = field.enum_type
        if raw in enum.values_by_name:
            return raw
        if re.fullmatch(r"-?[0-9]+", raw) and int(raw) in enum.values_by_number:
            return int(raw)
        names = ", ".join(v.name for v in enum.values)
        raise ValueError(f"expected one of {names}, got {raw!r}")
    return raw  # string, or bytes as base64 (checked by ParseDict)


def _put(document: dict[str, object], fields: tuple[FieldDescriptor, ...], value: object) -> None:
    """Set `value` at `fields` in a JSON document, replacing what is there (either name)."""
    target = document
    for field in fields[:-1]:
        existing = target.pop(field.name, None) if field.name != field.json_name else None
        existing = target.get(field.json_name, existing)
        if not isinstance(existing, dict):
            existing = {}
        target[field.json_name] = existing
        target = existing
    last = fields[-1]
    if last.name != last.json_name:
        target.pop(last.name, None)
    target[last.json_name] = value


# Shapes of json_format.ParseError messages, innermost first.
_UNKNOWN_FIELD: Final = re.compile(r'has no field named "(?P<name>[^"]*)" at "(?P<path>[^"]*)"')
_NOT_A_LIST: Final = re.compile(
    r"repeated field (?P<name>\S+) must be in \[\] .* at (?P<path>\S+?)\.?$"
)
_PATH: Final = re.compile(r"[A-Za-z_][\w.\[\]-]*")
_MAX_MESSAGE: Final = 200
_FAILED_FIELD: Final = re.compile(r"Failed to parse (?P<name>\S+) field: ")
_SIMPLIFIED: Final = (
    (re.compile(r"[Tt]imestamp|time data"), "expected an RFC 3339 date-time string"),
    (re.compile(r"[Dd]uration"), 'expected a duration string such as "1.5s"'),
    (
        re.compile(r"invalid literal for int\(\)|int\(\) argument|Couldn't parse integer"),
        "expected an integer",
    ),
    (re.compile(r"Couldn't parse float|could not convert string to float"), "expected a number"),
    (re.compile(r"expected string or bytes-like object|string_value"), "expected a string"),
    (
        re.compile(r"Expected true or false|Expected \"true\" or \"false\""),
        "expected true or false",
    ),
    (re.compile(r"Value out of range"), "out of range"),
    (re.compile(r"not acceptable for integer field"), "expected an integer"),
    (re.compile(r"must be in a dict|Struct must be"), "expected an object"),
    (re.compile(r"must be in \[\]|not iterable"), "expected an array"),
    (re.compile(r"Invalid enum value"), "not one of the allowed values"),
)


_MAX_NAME: Final = 100


def _clip(name: str) -> str:
    return name if len(name) <= _MAX_NAME else name[:_MAX_NAME] + "..."


def _normalize(descriptor: Descriptor, path: str) -> str:
    """A json_format error path ("Root.events[0].sent_at") with JSON names, without root."""
    parts = path.split(".")[1:]
    out: list[str] = []
    current: Descriptor | None = descriptor
    for part in parts:
        name, bracket, rest = part.partition("[")
        field = field_named(current, name) if current is not None else None
        out.append((field.json_name if field else name) + bracket + rest)
        current = field.message_type if field is not None and not is_map(field) else None
    return ".".join(p for p in out if p)


def field_error(descriptor: Descriptor, error: json_format.ParseError) -> FieldError:
    """The field and a short message from a json_format error, for a 400's ``errors``."""
    text = str(error)
    if found := _UNKNOWN_FIELD.search(text):
        base = _normalize(descriptor, found["path"])
        name = _clip(found["name"])  # a client's key: never echo a megabyte of it back
        return FieldError(f"{base}.{name}" if base else name, "unknown field")
    if found := _NOT_A_LIST.search(text):
        base = _normalize(descriptor, found["path"] + "." + found["name"])
        return FieldError(base, "expected an array")
    # The innermost path is the last " at <Root>..." (user values come before it).
    at = text.rfind(f" at {descriptor.name}")
    path = text[at + 4 :].rstrip(".") if at != -1 else ""
    if _PATH.fullmatch(path):
        field = _normalize(descriptor, path)
        text = text[:at]
    else:
        field = _normalize(descriptor, ".".join(["", *_FAILED_FIELD.findall(text)]))
    inner = _FAILED_FIELD.sub("", text)
    message = next((m for pattern, m in _SIMPLIFIED if pattern.search(inner)), None)
    if message is None:  # json_format's own words, without echoing a huge value back
        message = inner.rstrip(".")[:_MAX_MESSAGE] or "invalid value"
    return FieldError(field, message)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _leaf_error(descriptor: Descriptor, error: json_format.ParseError, prefix: str) -> FieldError:
    found = field_error(descriptor, error)
    return FieldError(_join(prefix, found.field), found.message)


def _parses(message_class: type[Message], document: dict[str, object]) -> bool:
    try:
        json_format.ParseDict(document, message_class())
    except (json_format.ParseError, TypeError, AttributeError):
        return False
    return True


def _first_bad_item(message_class: type[Message], key: str, items: list[object]) -> int:
    """The index of the first item of a failing repeated field that fails alone (bisection:
    about one more parse of the list in all)."""
    low, high = 0, len(items)
    while high - low > 1:
        middle = (low + high) // 2
        if _parses(message_class, {key: items[low:middle]}):
            low = middle
        else:
            high = middle
    return low


def locate_error(descriptor: Descriptor, document: object, prefix: str = "") -> FieldError | None:
    """The first field of `document` that does not parse as `descriptor`, by its full path.

    Called only after `ParseDict` failed, to name the field better than json_format does: it
    drops the index of a repeated item (``events.type`` for ``events[3].type``) and names no
    field at all when an item is not an object. Each top-level field is parsed alone, the
    failing item of a repeated field is found by bisection, and the walk goes down the first
    failure only, so this costs about two more parses of the document at most. None when the
    pieces all parse alone (the failure is between fields, e.g. two members of a oneof).
    """
    if not isinstance(document, dict):
        return FieldError(prefix, "expected an object")
    message_class = message_factory.GetMessageClass(descriptor)
    for key, value in document.items():
        try:
            json_format.ParseDict({key: value}, message_class())
            continue
        except json_format.ParseError as error:
            failure = error
        field = field_named(descriptor, key)
        if field is None or is_map(field) or value is None:
            return _leaf_error(descriptor, failure, prefix)
        nested = field.message_type
        path = _join(prefix, field.json_name)
        structured = nested is not None and not nested.full_name.startswith("google.protobuf.")
        if is_repeated(field):
            if not isinstance(value, list) or not value:
                return _leaf_error(descriptor, failure, prefix)
            index = _first_bad_item(message_class, key, value)
            item_path = f"{path}[{index}]"
            if nested is not None and structured:
                found = locate_error(nested, value[index], item_path)
                return found or FieldError(item_path, "invalid value")
            try:
                json_format.ParseDict({key: [value[index]]}, message_class())
            except json_format.ParseError as error:
                return FieldError(item_path, field_error(descriptor, error).message)
            return _leaf_error(descriptor, failure, prefix)
        if nested is not None and structured:
            return locate_error(nested, value, path) or _leaf_error(descriptor, failure, prefix)
        return _leaf_error(descriptor, failure, prefix)
    return None


class Transcoder:
    """Builds a route's request message from JSON and URL parts; renders its response."""

    def __init__(self, route: Route) -> None:
        self._route = route
        self._input = route.method.input_type
        self._body = route.body
        body_field = field_named(self._input, route.body) if route.body not in ("", "*") else None
        self._body_field = body_field
        self._path_fields = {
            v.field_path: resolve_field_path(self._input, v.field_path)
            for v in route.template.variables
        }
        self._bound = {json_path(f) for f in self._path_fields.values()}
        if body_field is not None:
            self._bound.add(body_field.json_name)
        response_field = (
            field_named(route.method.output_type, route.response_body)
            if route.response_body
            else None
        )
        self._response_key = response_field.json_name if response_field else None

    def request_message(
        self, *, path: Mapping[str, str], query: MultiMapping[str], body: object = NO_BODY
    ) -> Message:
        """The request message; a 400 `ProblemError` naming the fields when it cannot be.

        `body` is the parsed JSON body, or `NO_BODY`.
        """
        document = self._body_document(body)
        errors: list[FieldError] = []
        for field_path, raw in path.items():
            fields = self._path_fields[field_path]
            try:
                _put(document, fields, scalar_from_string(fields[-1], raw))
            except ValueError as problem:
                errors.append(FieldError(json_path(fields), str(problem)))
        if self._body != "*":
            errors += self._merge_query(document, query)
        if errors:
            raise ProblemError(400, _summary(errors), errors=errors)
        message = self._route.request_class()
        try:
            json_format.ParseDict(document, message)
        except json_format.ParseError as error:
            violation = locate_error(self._input, document) or field_error(self._input, error)
            raise ProblemError(400, _summary([violation]), errors=[violation]) from None
        return message

    def response_json(self, message: Message) -> bytes:
        document = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        if self._response_key is not None:
            return orjson.dumps(document.get(self._response_key))
        return orjson.dumps(document)

    def _body_document(self, body: object) -> dict[str, object]:
        if body is NO_BODY:
            return {}
        if self._body == "*":
            if not isinstance(body, dict):
                raise ProblemError(400, "The request body must be a JSON object.")
            return body
        if self._body_field is not None:
            return {self._body_field.json_name: body}
        return {}

    def _merge_query(
        self, document: dict[str, object], query: MultiMapping[str]
    ) -> list[FieldError]:
        errors = []
        for name in dict.fromkeys(query.keys()):
            values = query.getall(name)
            try:
                fields = resolve_field_path(self._input, name)
            except KeyError:
                errors.append(FieldError(_clip(name), "unknown query parameter"))
                continue
            dotted = json_path(fields)
            if any(dotted == b or dotted.startswith(b + ".") for b in self._bound):
                errors.append(FieldError(name, "already set by the path or the body"))
                continue
            leaf = fields[-1]
            try:
                if is_map(leaf):
                    raise ValueError("cannot be set from the URL")
                if is_repeated(leaf):
                    value: object = [scalar_from_string(leaf, v) for v in values]
                elif len(values) > 1:
                    raise ValueError("expected a single value")
                else:
                    value = scalar_from_string(leaf, values[0])
            except ValueError as problem:
                errors.append(FieldError(name, str(problem)))
                continue
            _put(document, fields, value)
        return errors


def _summary(errors: list[FieldError]) -> str:
    return "Invalid request: " + "; ".join(f"{e.field}: {e.message}" for e in errors) + "."
