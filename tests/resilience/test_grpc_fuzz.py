"""Raw bytes at every method of every gRPC server, straight to its port (no gateway).

The methods are what each server lists through server reflection: its own service, health
and reflection, resolved to the generated descriptors (a service the descriptors do not
know fails the test). Each method gets, with an admin's token so that input that parses
reaches the handler:

- ``grpc-truncated``: every prefix of a message with every field set (up to 64 of them);
- ``grpc-random``: random bytes;
- ``grpc-mutated``: that whole message with 1 to 3 bytes replaced at random;
- ``grpc-extremes``: the message with every field at its lowest, then its highest (NaN and
  infinities, 70 000-character strings, the last enum value);
- ``grpc-wire-types``: each field of the request encoded with every other wire type, with
  the right one but a cut or overlong payload, as a string that is not UTF-8, and with the
  groups and the reserved wire types proto3 has no use for; then field number 0 and a
  varint that never ends;
- ``grpc-oversize``: one message of 4 MiB + 1 byte, and one of exactly 4 MiB.

Random choices are seeded by the method's name, so every run sends the same bytes. Bytes
that do not parse as the request type (checked here with the same protobuf runtime) must get
INVALID_ARGUMENT saying so; the 4 MiB + 1 message RESOURCE_EXHAUSTED; anything that does
parse may get any answer a caller can cause (OK, INVALID_ARGUMENT, NOT_FOUND,
UNAUTHENTICATED...) but never a server fault (UNKNOWN, INTERNAL, DATA_LOSS, UNIMPLEMENTED,
UNAVAILABLE, DEADLINE_EXCEEDED) nor RESOURCE_EXHAUSTED within the limit (save reflection's
answer to the 4 MiB message, which echoes it and so is too big to send). Afterwards every
server still answers its health check and every process of the mesh is alive.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

import protos.analytics.v1.analytics_pb2
import protos.catalog.v1.catalog_pb2
import protos.users.v1.users_pb2
from tests.e2e.client import new_account
from tests.e2e.mesh_process import MeshProcess, pid_alive
from tests.resilience.tally import TALLY

SERVERS = {
    "users": protos.users.v1.users_pb2.DESCRIPTOR.services_by_name["UsersService"].full_name,
    "catalog": protos.catalog.v1.catalog_pb2.DESCRIPTOR.services_by_name[
        "CatalogService"
    ].full_name,
    "analytics": protos.analytics.v1.analytics_pb2.DESCRIPTOR.services_by_name[
        "AnalyticsService"
    ].full_name,
}
LIMIT = 4 * 1024 * 1024  # the servers' grpc.max_receive_message_length
FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
NOT_PARSED = "not a valid protobuf message"
RANDOM_INPUTS = 64
MUTATED_INPUTS = 32
MAX_PREFIXES = 64
CONCURRENCY = 8
CALL_TIMEOUT = 15.0


@dataclass(frozen=True)
class Input:
    family: str
    payload: bytes


@dataclass(frozen=True)
class Outcome:
    method: str
    family: str
    payload: bytes
    parses: bool
    code: grpc.StatusCode
    details: str

    def problem(self) -> str | None:
        """What is wrong with this answer, None when it is right."""
        size = len(self.payload)
        if size > LIMIT:
            expected = grpc.StatusCode.RESOURCE_EXHAUSTED
            return None if self.code is expected else f"expected {expected.name}"
        if self.code in FAULTS:
            return "a server fault"
        if self.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            if size == LIMIT and "Sent message larger than max" in self.details:
                return None  # an answer that echoes the request (reflection does) is too big
            return "RESOURCE_EXHAUSTED for a message within the limit"
        if self.parses:
            return None
        if self.code is not grpc.StatusCode.INVALID_ARGUMENT or NOT_PARSED not in self.details:
            return f"expected INVALID_ARGUMENT ({NOT_PARSED!r}) for bytes that do not parse"
        return None

    def __str__(self) -> str:
        shown = self.payload[:24].hex() + ("..." if len(self.payload) > 24 else "")
        return (
            f"{self.method} {self.family} [{len(self.payload)} B {shown}] "
            f"parses={self.parses} -> {self.code.name}: {self.details[:160]!r}: {self.problem()}"
        )


# --- what each server serves ------------------------------------------------------------


async def _listed_services(channel: grpc.aio.Channel) -> list[str]:
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    answers = [answer async for answer in info(ask(), timeout=CALL_TIMEOUT)]
    return sorted(s.name for s in answers[0].list_services_response.service)


def _methods(service_names: list[str]) -> list[MethodDescriptor]:
    pool = descriptor_pool.Default()
    methods: list[MethodDescriptor] = []
    for name in service_names:
        try:
            service = pool.FindServiceByName(name)
        except KeyError:
            raise AssertionError(
                f"the server lists {name}, which no descriptor here knows"
            ) from None
        methods.extend(service.methods)
    return methods


# --- the inputs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Values:
    """What `_filled` puts in each kind of field."""

    numbers: dict[int, object]  # by cpp_type
    string: str
    data: bytes
    enum_index: int  # which of the enum's values


_INT32, _INT64 = (-(2**31), 2**31 - 1), (-(2**63), 2**63 - 1)
SAMPLE = Values(
    {
        FieldDescriptor.CPPTYPE_INT32: -7,
        FieldDescriptor.CPPTYPE_INT64: -7_000_000_000,
        FieldDescriptor.CPPTYPE_UINT32: 7,
        FieldDescriptor.CPPTYPE_UINT64: 7_000_000_000,
        FieldDescriptor.CPPTYPE_DOUBLE: 7.5,
        FieldDescriptor.CPPTYPE_FLOAT: 7.5,
        FieldDescriptor.CPPTYPE_BOOL: True,
    },
    "fuzz-é",
    b"\x00fuzz\xff",
    -1,
)
EXTREMES = (
    Values(
        {
            FieldDescriptor.CPPTYPE_INT32: _INT32[0],
            FieldDescriptor.CPPTYPE_INT64: _INT64[0],
            FieldDescriptor.CPPTYPE_UINT32: 0,
            FieldDescriptor.CPPTYPE_UINT64: 0,
            FieldDescriptor.CPPTYPE_DOUBLE: float("-inf"),
            FieldDescriptor.CPPTYPE_FLOAT: float("nan"),
            FieldDescriptor.CPPTYPE_BOOL: False,
        },
        "\x00$.{}\u202e\U0001f600" * 3,
        b"",
        0,
    ),
    Values(
        {
            FieldDescriptor.CPPTYPE_INT32: _INT32[1],
            FieldDescriptor.CPPTYPE_INT64: _INT64[1],
            FieldDescriptor.CPPTYPE_UINT32: 2**32 - 1,
            FieldDescriptor.CPPTYPE_UINT64: 2**64 - 1,
            FieldDescriptor.CPPTYPE_DOUBLE: float("nan"),
            FieldDescriptor.CPPTYPE_FLOAT: float("inf"),
            FieldDescriptor.CPPTYPE_BOOL: True,
        },
        "x" * 70_000,
        b"\xff" * 70_000,
        -1,
    ),
)


def _sample(field: FieldDescriptor, values: Values, depth: int) -> object:
    if field.message_type is not None:
        return _filled(field.message_type, values, depth + 1)
    if field.enum_type is not None:
        return field.enum_type.values[values.enum_index].number
    if field.type == FieldDescriptor.TYPE_STRING:
        return values.string
    if field.type == FieldDescriptor.TYPE_BYTES:
        return values.data
    return values.numbers[field.cpp_type]


def _filled(descriptor: Descriptor, values: Values = SAMPLE, depth: int = 0) -> Message:
    """A message of `descriptor` with every field set (two items in lists), 3 levels deep."""
    message = message_factory.GetMessageClass(descriptor)()
    if depth > 3:
        return message
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            entry = getattr(message, field.name)
            if value_field.message_type is not None:
                entry["k"].CopyFrom(_sample(value_field, values, depth))
            else:
                entry["k"] = _sample(value_field, values, depth)
        elif field.is_repeated:
            items = getattr(message, field.name)
            for _ in range(2):
                if field.message_type is not None:
                    items.add().CopyFrom(_sample(field, values, depth))
                else:
                    items.append(_sample(field, values, depth))
        elif field.message_type is not None:
            getattr(message, field.name).CopyFrom(_sample(field, values, depth))
        else:
            setattr(message, field.name, _sample(field, values, depth))
    return message


def _mutated(whole: bytes, rng: random.Random) -> bytes:
    """`whole` with 1 to 3 of its bytes replaced at random."""
    mutated = bytearray(whole)
    for _ in range(rng.randint(1, 3)):
        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
    return bytes(mutated)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


_WIRE_TYPE = {
    FieldDescriptor.TYPE_DOUBLE: 1,
    FieldDescriptor.TYPE_FIXED64: 1,
    FieldDescriptor.TYPE_SFIXED64: 1,
    FieldDescriptor.TYPE_FLOAT: 5,
    FieldDescriptor.TYPE_FIXED32: 5,
    FieldDescriptor.TYPE_SFIXED32: 5,
    FieldDescriptor.TYPE_STRING: 2,
    FieldDescriptor.TYPE_BYTES: 2,
    FieldDescriptor.TYPE_MESSAGE: 2,
}  # every other type is a varint (0)
_WELL_FORMED = {0: _varint(300), 1: b"\x01" * 8, 2: _varint(3) + b"abc", 5: b"\x01" * 4}
_BROKEN = {
    0: b"\xff" * 11,  # a varint longer than 10 bytes
    1: b"\x01" * 3,  # 8 bytes promised
    2: _varint(1000) + b"abc",  # a length past the end
    5: b"\x01",  # 4 bytes promised
}


def _wire_type_inputs(descriptor: Descriptor) -> Iterator[bytes]:
    for field in descriptor.fields:
        right = _WIRE_TYPE.get(field.type, 0)
        for wire_type, payload in _WELL_FORMED.items():
            if wire_type != right:
                yield _tag(field.number, wire_type) + payload  # another type's encoding
        yield _tag(field.number, right) + _BROKEN[right]
        if right == 2:
            yield _tag(field.number, 2) + _varint(2) + b"\xc3\x28"  # not UTF-8 (a string)
        for wire_type in (3, 4, 6, 7):  # a group that never ends, an end, reserved types
            yield _tag(field.number, wire_type) + b"\x00"
    yield _tag(0, 0) + b"\x00"  # field number 0 is invalid
    yield b"\x08" + b"\x80" * 9  # a varint that never ends


def _prefixes(whole: bytes) -> Iterator[bytes]:
    lengths = list(range(1, len(whole)))
    if len(lengths) > MAX_PREFIXES:
        step = len(lengths) / MAX_PREFIXES
        lengths = sorted({1, len(whole) - 1, *(1 + int(i * step) for i in range(MAX_PREFIXES))})
    for length in lengths:
        yield whole[:length]


def _oversize() -> Iterator[bytes]:
    """Messages of exactly LIMIT + 1 and LIMIT bytes: one unknown length-delimited field."""
    for size in (LIMIT + 1, LIMIT):
        tag = _tag(1000, 2)
        payload = size - len(tag) - 4  # a 4-byte varint length for 2..4 MiB
        yield tag + _varint(payload) + b"f" * payload


def inputs(method: MethodDescriptor) -> Iterator[Input]:
    rng = random.Random(f"grpc-fuzz/{method.full_name}")
    whole = _filled(method.input_type).SerializeToString()
    for payload in _prefixes(whole):
        yield Input("grpc-truncated", payload)
    for _ in range(RANDOM_INPUTS):
        yield Input("grpc-random", rng.randbytes(rng.randint(1, 96)))
    for _ in range(MUTATED_INPUTS if whole else 0):
        yield Input("grpc-mutated", _mutated(whole, rng))
    for values in EXTREMES:
        yield Input("grpc-extremes", _filled(method.input_type, values).SerializeToString())
    for payload in _wire_type_inputs(method.input_type):
        yield Input("grpc-wire-types", payload)
    for payload in _oversize():
        assert len(payload) in (LIMIT, LIMIT + 1)
        yield Input("grpc-oversize", payload)


def parses(method: MethodDescriptor, payload: bytes) -> bool:
    try:
        message_factory.GetMessageClass(method.input_type).FromString(payload)
    except DecodeError:
        return False
    return True


# --- the calls ----------------------------------------------------------------------------


async def _send(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    payload: bytes,
    metadata: tuple[tuple[str, str], ...],
) -> tuple[grpc.StatusCode, str]:
    """The status of one call of `method` with `payload` as its (only) request message."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if not method.client_streaming and not method.server_streaming:
            await channel.unary_unary(path, None, None)(
                payload, metadata=metadata, timeout=CALL_TIMEOUT
            )
            return grpc.StatusCode.OK, ""
        stream: Any  # a streaming call; a client-streaming one is called as bidi (same wire)
        if not method.client_streaming:
            stream = channel.unary_stream(path, None, None)(
                payload, metadata=metadata, timeout=CALL_TIMEOUT
            )
        else:
            stream = channel.stream_stream(path, None, None)(
                None, metadata=metadata, timeout=CALL_TIMEOUT
            )
            await stream.write(payload)
            await stream.done_writing()
        first = await stream.read()  # a streaming answer: its first message is enough
        if first is grpc.aio.EOF:  # type: ignore[attr-defined]
            return await stream.code(), await stream.details() or ""
        stream.cancel()
        return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""


async def _healthy(channel: grpc.aio.Channel) -> int:
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    answer = await check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT)
    return int(answer.status)


async def test_raw_bytes_at_every_grpc_method(
    mesh: MeshProcess, http: aiohttp.ClientSession
) -> None:
    admin = await new_account(mesh, http, admin=True)
    metadata = (("authorization", f"Bearer {admin.access_token}"),)
    outcomes: list[Outcome] = []
    fuzzed: dict[str, list[str]] = {}
    limit = asyncio.Semaphore(CONCURRENCY)
    options = [("grpc.max_send_message_length", 2 * LIMIT)]

    for server, own_service in SERVERS.items():
        target = f"127.0.0.1:{mesh.ports[server]}"
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            listed = await _listed_services(channel)
            assert own_service in listed, (server, listed)
            methods = _methods(listed)
            fuzzed[server] = [m.full_name for m in methods]

            async def one(method: MethodDescriptor, item: Input) -> Outcome:
                async with limit:
                    code, details = await _send(channel, method, item.payload, metadata)
                return Outcome(
                    method.full_name,
                    item.family,
                    item.payload,
                    parses(method, item.payload),
                    code,
                    details,
                )

            batch = [one(method, item) for method in methods for item in inputs(method)]
            outcomes += await asyncio.gather(*batch)
            assert await _healthy(channel) == health_pb2.HealthCheckResponse.SERVING, server

    for outcome in outcomes:
        TALLY.tried(outcome.family)
    TALLY.saw_server_errors(
        sum(o.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) for o in outcomes)
    )
    codes = Counter(o.code.name for o in outcomes)
    families = Counter(o.family for o in outcomes)
    methods_fuzzed = sum(len(names) for names in fuzzed.values())
    print(f"\ngRPC fuzz: {methods_fuzzed} methods, inputs {dict(families)}, codes {dict(codes)}")

    wrong = [o for o in outcomes if o.problem() is not None]
    assert not wrong, f"{len(wrong)} wrong answers:\n" + "\n".join(map(str, wrong[:25]))
    # The inputs did reach both sides of the parser, and the limit was hit every time.
    assert sum(not o.parses for o in outcomes) > 1000
    assert sum(o.parses and len(o.payload) < LIMIT for o in outcomes) > 100
    oversize = [o for o in outcomes if len(o.payload) > LIMIT]
    assert len(oversize) == methods_fuzzed

    assert mesh.process.poll() is None, "mesh up exited"
    for name, pids in mesh.child_pids().items():
        assert pid_alive(pids[-1]), f"{name} (pid {pids[-1]}) is gone"
    for server in SERVERS:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports[server]}") as channel:
            assert await _healthy(channel) == health_pb2.HealthCheckResponse.SERVING, server
