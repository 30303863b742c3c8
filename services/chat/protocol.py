"""The chat wire protocol: JSON text frames with a ``type``.

Client to server: ``join {room, since?}``, ``leave {room}``, ``send {room, clientMsgId,
text}``, ``typing {room}``, ``ping``. Server to client: ``joined {room, lastSeq, presence,
recovered?}``, ``message {room, seq, id, userId, text, ts, clientMsgId}``, ``ack
{clientMsgId, seq, id}``, ``presence {room, joins, leaves}``, ``typing {room, userId}``,
``error {code, message, ref?}``, ``pong``.

`parse_command` turns a text frame into a typed command or raises `ProtocolError` (its
``code`` is the error frame's). Encoders return JSON bytes; `text_frame` wraps them into a
complete, unmasked WebSocket text frame so that a fan-out encodes and frames a message once
and writes the same bytes to every connection.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

MAX_ID_CHARS: Final = 64

# Error codes of `error` frames.
INVALID_JSON: Final = "invalid_json"
INVALID_FRAME: Final = "invalid_frame"
UNKNOWN_TYPE: Final = "unknown_type"
MISSING_FIELD: Final = "missing_field"
INVALID_FIELD: Final = "invalid_field"
TEXT_TOO_LONG: Final = "text_too_long"
ROOM_NOT_FOUND: Final = "room_not_found"
NOT_A_MEMBER: Final = "not_a_member"
NOT_JOINED: Final = "not_joined"
TOO_MANY_ROOMS: Final = "too_many_rooms"
RATE_LIMITED: Final = "rate_limited"
BINARY_FRAME: Final = "binary_frame"
UNAVAILABLE: Final = "unavailable"


class ProtocolError(ValueError):
    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.ref = ref


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    since: int | None


@dataclass(frozen=True, slots=True)
class Leave:
    room: str


@dataclass(frozen=True, slots=True)
class Send:
    room: str
    client_msg_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Typing:
    room: str


Command = Ping | Join | Leave | Send | Typing
PING: Final = Ping()


def _string(frame: dict[str, Any], name: str, ref: str | None, limit: int = MAX_ID_CHARS) -> str:
    if name not in frame:
        raise ProtocolError(MISSING_FIELD, f"'{name}' is required", ref)
    value = frame[name]
    if not isinstance(value, str) or not value:
        raise ProtocolError(INVALID_FIELD, f"'{name}' must be a non-empty string", ref)
    if len(value) > limit:
        raise ProtocolError(INVALID_FIELD, f"'{name}' is longer than {limit} characters", ref)
    return value


def parse_command(data: bytes | str, max_text_chars: int) -> Command:
    """The command in one text frame; `ProtocolError` says what is wrong with it."""
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(INVALID_JSON, f"frame is not JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise ProtocolError(INVALID_FRAME, "a frame is a JSON object with a string 'type'")
    kind = frame.get("type")
    if kind is None:
        raise ProtocolError(MISSING_FIELD, "'type' is required")
    if not isinstance(kind, str):
        raise ProtocolError(INVALID_FRAME, "a frame is a JSON object with a string 'type'")
    if kind == "ping":
        return PING
    if kind == "send":
        ref = frame.get("clientMsgId") if isinstance(frame.get("clientMsgId"), str) else None
        room = _string(frame, "room", ref)
        client_msg_id = _string(frame, "clientMsgId", ref)
        if "text" not in frame:
            raise ProtocolError(MISSING_FIELD, "'text' is required", ref)
        text = frame["text"]
        if not isinstance(text, str) or not text.strip():
            raise ProtocolError(INVALID_FIELD, "'text' must be a non-empty string", ref)
        if len(text) > max_text_chars:
            raise ProtocolError(
                TEXT_TOO_LONG, f"'text' is longer than {max_text_chars} characters", ref
            )
        return Send(room, client_msg_id, text)
    if kind == "join":
        room = _string(frame, "room", None)
        since = frame.get("since")
        if since is not None and (
            not isinstance(since, int) or isinstance(since, bool) or since < 0
        ):
            raise ProtocolError(INVALID_FIELD, "'since' must be a sequence number >= 0", room)
        return Join(room, since)
    if kind == "leave":
        return Leave(_string(frame, "room", None))
    if kind == "typing":
        return Typing(_string(frame, "room", None))
    raise ProtocolError(UNKNOWN_TYPE, f"unknown frame type {kind[:40]!r}")


# Server frames (JSON bytes).


def rfc3339(moment: datetime) -> str:
    """UTC with milliseconds and a Z, the precision MongoDB keeps."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def message_frame(
    room: str, seq: int, message_id: str, user_id: str, text: str, ts: datetime, client_msg_id: str
) -> bytes:
    return orjson.dumps(
        {
            "type": "message",
            "room": room,
            "seq": seq,
            "id": message_id,
            "userId": user_id,
            "text": text,
            "ts": rfc3339(ts),
            "clientMsgId": client_msg_id,
        }
    )


def ack_frame(client_msg_id: str, seq: int, message_id: str) -> bytes:
    return orjson.dumps({"type": "ack", "clientMsgId": client_msg_id, "seq": seq, "id": message_id})


def joined_frame(
    room: str, last_seq: int, presence: Sequence[str], recovered: bool | None
) -> bytes:
    frame: dict[str, Any] = {
        "type": "joined",
        "room": room,
        "lastSeq": last_seq,
        "presence": list(presence),
    }
    if recovered is not None:
        frame["recovered"] = recovered
    return orjson.dumps(frame)


def presence_frame(room: str, joins: Sequence[str], leaves: Sequence[str]) -> bytes:
    return orjson.dumps(
        {"type": "presence", "room": room, "joins": list(joins), "leaves": list(leaves)}
    )


def typing_frame(room: str, user_id: str) -> bytes:
    return orjson.dumps({"type": "typing", "room": room, "userId": user_id})


def error_frame(code: str, message: str, ref: str | None = None) -> bytes:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        frame["ref"] = ref
    return orjson.dumps(frame)


PONG: Final = orjson.dumps({"type": "pong"})

# WebSocket framing (RFC 6455 section 5.2): server frames are never masked, so one framed
# message is valid on every connection.

_FIN_TEXT: Final = 0x81


def text_frame(payload: bytes) -> bytes:
    """`payload` as one complete WebSocket text frame (FIN, opcode 1, no mask)."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, 126, size) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, size) + payload


PING_FRAME: Final = b"\x89\x00"  # FIN, opcode 9 (ping), empty payload
