"""Signing keys from PEM text, and the page-token key derived from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.netbind import StartupError
from services.users.signing import (
    derive_page_token_key,
    parse_signing_keys,
    resolve_signing_keys,
)


def pem(private: object) -> str:
    return private.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


FIRST, SECOND = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


@pytest.mark.parametrize(
    "text",
    [
        pem(FIRST) + pem(SECOND),  # concatenated
        pem(FIRST) + "\n\n" + pem(SECOND),  # blank line between
        "  " + pem(FIRST).replace("\n", "\\n") + pem(SECOND).replace("\n", "\\n"),  # one line
    ],
)
def test_several_keys_keep_their_order(text: str) -> None:
    keys = parse_signing_keys(text)
    raw = [k.private.private_bytes_raw() for k in keys]
    assert raw == [FIRST.private_bytes_raw(), SECOND.private_bytes_raw()]
    assert keys[0].kid != keys[1].kid


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a key at all",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        pem(generate_private_key(SECP256R1())),
        pem(FIRST) + pem(FIRST),
    ],
)
def test_bad_pem_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(ValueError, match=r"PEM|key") as caught:
        parse_signing_keys(text)
    assert "AAAA" not in str(caught.value)
    assert "MC4C" not in str(caught.value)  # the start of an Ed25519 PKCS#8 body


def test_configured_keys_win_over_the_directory(tmp_path: Path) -> None:
    keys = parse_signing_keys(pem(FIRST))
    assert resolve_signing_keys(keys, tmp_path / "keys", "VAR") == keys
    assert not (tmp_path / "keys").exists()


def test_a_broken_key_file_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "0001.pem").write_text("broken")
    with pytest.raises(StartupError, match=r"^MESH_USERS_SIGNING_KEYS_DIR: ") as caught:
        resolve_signing_keys((), tmp_path, "MESH_USERS_SIGNING_KEYS_DIR")
    assert caught.value.fatal


def test_page_token_key_comes_from_the_secret_or_the_signing_key() -> None:
    first, second = parse_signing_keys(pem(FIRST) + pem(SECOND))
    assert derive_page_token_key(None, first) != derive_page_token_key(None, second)
    assert derive_page_token_key(None, first) == derive_page_token_key(None, first)
    assert derive_page_token_key("x" * 40, first) == derive_page_token_key("x" * 40, second)
    assert derive_page_token_key(None, first) != first.private.private_bytes_raw()
    assert len(derive_page_token_key(None, first)) == 32
