"""The test-only `gwtest.v1.ShelfService`, compiled from bookshelf.proto at import.

protoc (grpc_tools) writes a descriptor set; the file is added to the default descriptor
pool, whose google.api/google.protobuf files are already there, so the gateway reads its
http rules exactly as it reads the real protos'.
"""

from __future__ import annotations

import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    field_mask_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from grpc_tools import protoc

from gateway.routing import UpstreamService
from protos.mesh.v1 import access_pb2  # noqa: F401 - the test proto imports it

# The imports bookshelf.proto needs, loaded into the default pool by importing them.
DEPENDENCIES = (
    annotations_pb2,
    field_behavior_pb2,
    field_mask_pb2,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
HERE = Path(__file__).resolve().parent
PROTO = "bookshelf.proto"
ROOT = HERE.parent.parent.parent  # the repo root: imports protos/mesh/v1/access.proto


def _compile() -> descriptor_pb2.FileDescriptorProto:
    includes = [
        HERE,
        ROOT,
        Path(protoc.__file__).parent / "_proto",
        sysconfig.get_paths()["purelib"],
    ]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "set.pb"
        args = ["protoc", *(f"-I{d}" for d in includes), f"--descriptor_set_out={out}", PROTO]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on bookshelf.proto")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return files.file[0]


def _load() -> ServiceDescriptor:
    pool = descriptor_pool.Default()
    try:
        file = pool.FindFileByName(PROTO)
    except KeyError:
        file = pool.AddSerializedFile(_compile().SerializeToString())
    service: ServiceDescriptor = file.services_by_name["ShelfService"]
    return service


SERVICE = _load()
BOOKSHELF = UpstreamService("catalog", SERVICE)  # served by the "catalog" upstream in tests


def message(name: str) -> Descriptor:
    descriptor: Descriptor = SERVICE.file.message_types_by_name[name]
    return descriptor


def new(type_name: str, /, **fields: Any) -> Any:
    """A message of type `type_name` (e.g. "Book") with `fields` set."""
    return message_factory.GetMessageClass(message(type_name))(**fields)
