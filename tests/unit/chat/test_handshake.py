"""Where a WebSocket handshake's token is, and the Origin allow-list."""

from __future__ import annotations

import pytest

from mesh.auth.handshake import (
    allowed_origins,
    handshake_credentials,
    offered_protocols,
    origin_allowed,
)
from mesh.settings import Env, SettingsError


def test_offered_protocols() -> None:
    assert offered_protocols(None) == []
    assert offered_protocols(" bearer ,  tok.en , ,x") == ["bearer", "tok.en", "x"]


def test_token_from_the_header_or_the_subprotocol_pair() -> None:
    header = handshake_credentials("Bearer abc", [])
    assert (header.token, header.subprotocol) == ("abc", None)
    pair = handshake_credentials(None, ["bearer", "abc"])
    assert (pair.token, pair.subprotocol) == ("abc", "bearer")
    both = handshake_credentials("Bearer h", ["bearer", "p"])
    assert (both.token, both.subprotocol) == ("h", "bearer")  # the header wins


@pytest.mark.parametrize(
    ("authorization", "protocols", "problem"),
    [
        (None, [], "sign in first"),
        ("Basic abc", [], "Bearer <access token>"),
        ("Bearer", [], "Bearer <access token>"),
        (None, ["bearer"], "followed by the access token"),
        (None, ["bearer", "bearer"], "followed by the access token"),
        (None, ["chat.v1"], "sign in first"),
    ],
)
def test_no_usable_credentials(
    authorization: str | None, protocols: list[str], problem: str
) -> None:
    credentials = handshake_credentials(authorization, protocols)
    assert credentials.token is None
    assert problem in credentials.problem


def test_origins() -> None:
    allowed = allowed_origins(Env({"MESH_ALLOWED_ORIGINS": "https://App.example/, http://x:1"}))
    assert allowed == frozenset({"https://app.example", "http://x:1"})
    assert origin_allowed(None, allowed)  # not a browser
    assert origin_allowed("https://app.example", allowed)
    assert not origin_allowed("https://evil.example", allowed)
    assert not origin_allowed("null", allowed)
    assert origin_allowed("https://any", allowed_origins(Env({"MESH_ALLOWED_ORIGINS": "*"})))
    default = allowed_origins(Env({}))
    assert origin_allowed("http://localhost:8080", default)
    for bad in ("app.example", "https://a/b", "ftp://a"):
        with pytest.raises(SettingsError, match="MESH_ALLOWED_ORIGINS"):
            allowed_origins(Env({"MESH_ALLOWED_ORIGINS": bad}))
