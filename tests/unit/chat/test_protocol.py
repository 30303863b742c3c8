"""Parsing client frames and encoding server frames."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import orjson
import pytest

from services.chat.protocol import (
    PING,
    Join,
    Leave,
    ProtocolError,
    Send,
    Typing,
    error_frame,
    joined_frame,
    message_frame,
    parse_command,
    rfc3339,
    text_frame,
)


def parse(frame: object, max_text: int = 10) -> object:
    return parse_command(orjson.dumps(frame), max_text)


def test_commands() -> None:
    assert parse({"type": "ping"}) is PING
    assert parse({"type": "join", "room": "r"}) == Join("r", None)
    assert parse({"type": "join", "room": "r", "since": 0}) == Join("r", 0)
    assert parse({"type": "leave", "room": "r"}) == Leave("r")
    assert parse({"type": "typing", "room": "r"}) == Typing("r")
    assert parse({"type": "send", "room": "r", "clientMsgId": "c", "text": "hi"}) == Send(
        "r", "c", "hi"
    )
    assert parse({"type": "send", "room": "r", "clientMsgId": "c", "text": "x" * 10}) == Send(
        "r", "c", "x" * 10
    )


@pytest.mark.parametrize(
    ("data", "code", "ref"),
    [
        (b"{", "invalid_json", None),
        (b"\xff\xfe", "invalid_json", None),
        (b"[]", "invalid_frame", None),
        (b'{"type": 3}', "invalid_frame", None),
        (b"{}", "missing_field", None),
        (b'{"type": "nope"}', "unknown_type", None),
        (b'{"type": "join", "room": ""}', "invalid_field", None),
        (b'{"type": "join", "room": "r", "since": true}', "invalid_field", "r"),
        (b'{"type": "join", "room": "r", "since": 1.5}', "invalid_field", "r"),
        (b'{"type": "join", "room": "' + b"r" * 65 + b'"}', "invalid_field", None),
        (b'{"type": "send", "room": "r", "clientMsgId": "c"}', "missing_field", "c"),
        (b'{"type": "send", "room": "r", "clientMsgId": "c", "text": "  "}', "invalid_field", "c"),
        (b'{"type": "send", "room": "r", "clientMsgId": "c", "text": 5}', "invalid_field", "c"),
        (
            b'{"type": "send", "room": "r", "clientMsgId": "c", "text": "' + b"x" * 11 + b'"}',
            "text_too_long",
            "c",
        ),
        (b'{"type": "send", "clientMsgId": "c", "text": "x"}', "missing_field", "c"),
    ],
)
def test_bad_frames(data: bytes, code: str, ref: str | None) -> None:
    with pytest.raises(ProtocolError) as error:
        parse_command(data, 10)
    assert (error.value.code, error.value.ref) == (code, ref)


def test_server_frames() -> None:
    ts = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert rfc3339(ts) == "2024-05-06T07:08:09.123Z"
    assert orjson.loads(message_frame("r", 3, "i", "u", "t", ts, "c")) == {
        "type": "message", "room": "r", "seq": 3, "id": "i", "userId": "u", "text": "t",
        "ts": "2024-05-06T07:08:09.123Z", "clientMsgId": "c",
    }  # fmt: skip
    assert orjson.loads(joined_frame("r", 7, ["a"], None)) == {
        "type": "joined", "room": "r", "lastSeq": 7, "presence": ["a"],
    }  # fmt: skip
    assert orjson.loads(joined_frame("r", 7, [], False))["recovered"] is False
    assert orjson.loads(error_frame("x", "y")) == {"type": "error", "code": "x", "message": "y"}
    assert orjson.loads(error_frame("x", "y", "z"))["ref"] == "z"


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_text_frames_are_complete_unmasked_frames(size: int) -> None:
    payload = b"a" * size
    frame = text_frame(payload)
    assert frame[0] == 0x81  # FIN + text
    assert frame[1] & 0x80 == 0  # not masked
    length = frame[1] & 0x7F
    if size < 126:
        assert (length, frame[2:]) == (size, payload)
    elif size < 65536:
        assert (length, struct.unpack("!H", frame[2:4])[0], frame[4:]) == (126, size, payload)
    else:
        assert (length, struct.unpack("!Q", frame[2:10])[0], frame[10:]) == (127, size, payload)
