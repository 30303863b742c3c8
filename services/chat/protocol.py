"""The chat wire protocol: JSON text frames with a `type`."""

from __future__ import annotations

from typing import Any, Final

import orjson


class ProtocolError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def decode_frame(text: str) -> dict[str, Any]:
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("invalid_json", f"frame is not JSON: {exc}") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ProtocolError("invalid_frame", "a frame is a JSON object with a string 'type'")
    return frame


def error_frame(code: str, message: str, ref: str | None = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        frame["ref"] = ref
    return orjson.dumps(frame).decode()


PONG: Final = orjson.dumps({"type": "pong"}).decode()
