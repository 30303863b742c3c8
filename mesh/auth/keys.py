"""Ed25519 signing keys and their public JWKs.

Production gives the keys as PEM (a file or an environment variable); a local run generates
one into `.mesh/keys/` on first start. Several keys can be active at once for rotation: the
newest signs, all are published, so tokens signed by the previous key stay valid.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

ALGORITHM = "EdDSA"


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()


def key_id(public: Ed25519PublicKey) -> str:
    """A stable id: the start of the SHA-256 of the raw public key (RFC 7638 in spirit)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signing_key_from_pem(pem: bytes) -> SigningKey:
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return SigningKey(key_id(private.public_key()), private)


def keys_from_pems(pems: Sequence[bytes]) -> list[SigningKey]:
    """Keys in the given order; the last one signs."""
    return [signing_key_from_pem(pem) for pem in pems]


def load_or_create_keys(directory: Path) -> list[SigningKey]:
    """Every `*.pem` in `directory` sorted by name (the last signs); one is made if none."""
    directory.mkdir(parents=True, exist_ok=True)
    files = sorted(directory.glob("*.pem"))
    if not files:
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = directory / "0001.pem"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
        files = [path]
    return keys_from_pems([f.read_bytes() for f in files])


def public_jwk(key: SigningKey) -> dict[str, Any]:
    jwk: dict[str, Any] = OKPAlgorithm.to_jwk(key.public, as_dict=True)
    return {**jwk, "kid": key.kid, "alg": ALGORITHM, "use": "sig"}


def public_key_from_jwk(jwk: dict[str, Any]) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("not an Ed25519 JWK")
    key = OKPAlgorithm.from_jwk({k: jwk[k] for k in ("kty", "crv", "x")})
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key
