"""Where the users service gets its signing keys, and the secrets it derives from them.

Production passes the keys as PEM text (`MESH_USERS_SIGNING_KEYS`: one or more PKCS#8
Ed25519 private keys, concatenated or separated by blank lines, the last one signing);
a local run keeps them as `*.pem` files in a directory, generating one on first start.
To rotate: add the new key last (it signs from then on, the old one still verifies),
wait for the access-token lifetime, then drop the old key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mesh.auth.keys import SigningKey, load_or_create_keys, signing_key_from_pem
from mesh.netbind import StartupError

_PEM_BLOCK: Final = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\s.*?-----END \1-----", re.DOTALL | re.ASCII
)
PAGE_TOKEN_INFO: Final = b"mesh users v1 page tokens"


def parse_signing_keys(text: str) -> list[SigningKey]:
    """The Ed25519 private keys in PEM `text`, in order. Never echoes the text."""
    if "\n" not in text and "\\n" in text:  # a one-line value with escaped newlines
        text = text.replace("\\n", "\n")
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(text)]
    if not blocks:
        raise ValueError("expected one or more Ed25519 private keys in PEM (PKCS#8)")
    keys = []
    for number, block in enumerate(blocks, start=1):
        try:
            keys.append(signing_key_from_pem(block.encode()))
        except (ValueError, TypeError):
            raise ValueError(
                f"PEM block {number} of {len(blocks)} is not an unencrypted Ed25519 private key"
            ) from None
    if len({k.kid for k in keys}) != len(keys):
        raise ValueError("the same key is given twice")
    return keys


def resolve_signing_keys(
    configured: Sequence[SigningKey], directory: Path, directory_var: str
) -> list[SigningKey]:
    """The configured keys, else those in `directory` (one generated there if none)."""
    if configured:
        return list(configured)
    try:
        return load_or_create_keys(directory)
    except (OSError, ValueError, TypeError) as exc:
        raise StartupError(
            f"{directory_var}: cannot load signing keys from {directory}: {exc}", fatal=True
        ) from None


def derive_page_token_key(secret: str | None, signing_key: SigningKey) -> bytes:
    """The HMAC key of page tokens: from the configured secret, else the signing key."""
    if secret is not None:
        material = secret.encode()
    else:
        material = signing_key.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PAGE_TOKEN_INFO).derive(
        material
    )
