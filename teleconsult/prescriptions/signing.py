"""Canonical JSON and the server's Ed25519 signature of issued prescriptions.

The signed payload is the canonical JSON (sorted keys, no whitespace, UTF-8, no NaN: RFC 8785 for the values we use)
of ``{"prescription": {id, series, version, replaces, issued, valid_until, prescriber, patient, note},
"medication_requests": [FHIR MedicationRequest, ...]}``, recomputed from the stored rows on every verification: a row
changed after issue no longer verifies. The private key lives in a file outside the repository (PKCS#8 PEM, mode 0600),
created on first use; ``key_id`` is the first 8 bytes (hex) of the SHA-256 of the raw public key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from teleconsult.prescriptions.errors import SigningKeyError

ALGORITHM = "Ed25519"


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes of ``value``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def key_id_of(public: Ed25519PublicKey) -> str:
    """Short id of a public key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    """The server's signing key."""

    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        """Its public half."""
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        """Short id recorded with each signature."""
        return key_id_of(self.public)

    def public_pem(self) -> str:
        """The public key as PEM (for docs and outside verifiers)."""
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def sign(self, payload: Any) -> bytes:
        """Signature of the canonical JSON of ``payload``."""
        return self.private.sign(canonical(payload))

    def verify(self, payload: Any, signature: bytes, key_id: str) -> bool:
        """True when ``signature`` is this key's over the canonical JSON of ``payload``."""
        if key_id != self.key_id:
            return False
        try:
            self.public.verify(signature, canonical(payload))
        except InvalidSignature:
            return False
        return True

    @classmethod
    def generate(cls) -> Signer:
        """A fresh key in memory (tests, benches)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        """Load the key file, or create it (0600, parent 0700) when missing."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return cls.load_or_create(path)  # another process created it first
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            return cls(key)
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise SigningKeyError(f"cannot read the prescription signing key {path}: {exc}") from exc
        if not isinstance(loaded, Ed25519PrivateKey):
            raise SigningKeyError(f"{path} is not an Ed25519 private key")
        return cls(loaded)


def default_key_path() -> Path:
    """``$XDG_STATE_HOME/tbib/prescription-signing-ed25519.pem`` (``~/.local/state`` by default): never in the repo."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tbib" / "prescription-signing-ed25519.pem"
