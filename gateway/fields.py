"""Proto field lookups by the proto3 JSON mapping, shared by transcoding and OpenAPI."""

from __future__ import annotations

import functools
from typing import Final

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

WRAPPERS: Final = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
# Well-known types whose JSON form is a string.
STRING_WKTS: Final = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)


@functools.cache
def _by_json_name(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {f.json_name: f for f in descriptor.fields}


def field_named(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """The field called `name` by its JSON name or its proto name (the JSON parser takes both)."""
    return _by_json_name(descriptor).get(name) or descriptor.fields_by_name.get(name)


def is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and bool(field.message_type.GetOptions().map_entry)


def is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def is_scalar_like(field: FieldDescriptor) -> bool:
    """A value a URL can carry: a scalar, an enum, a wrapper or a string-form well-known type."""
    if field.message_type is None:
        return True
    return field.message_type.full_name in WRAPPERS | STRING_WKTS


def resolve_field_path(descriptor: Descriptor, dotted: str) -> tuple[FieldDescriptor, ...]:
    """The fields along `dotted` ("a.b.c", JSON or proto names); KeyError naming the bad part.

    Every field but the last must be a singular message field.
    """
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for part in dotted.split("."):
        field = field_named(current, part) if current is not None else None
        if field is None:
            raise KeyError(part)
        fields.append(field)
        nested = not is_repeated(field) and not is_scalar_like(field)
        current = field.message_type if nested else None
    return tuple(fields)


def json_path(fields: tuple[FieldDescriptor, ...]) -> str:
    return ".".join(f.json_name for f in fields)


def behaviors(field: FieldDescriptor) -> frozenset[int]:
    """The field's google.api.field_behavior values (REQUIRED, OUTPUT_ONLY, ...)."""
    return frozenset(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])
