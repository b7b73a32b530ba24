"""Signed gateway commands, server side (pure: no I/O, no clock; the caller passes ``now`` in Unix seconds).

The envelope and the body are specified in :mod:`gateway_agent.commands` (the gateway's verifier) and in
``docs/mqtt.md``: ``{"v": 1, "alg": "Ed25519", "kid", "payload": base64url(JSON body), "sig"}``, the signature over
``b"tbib-cmd-v1." + payload``. The signing key is derived from the server's ``secret_key`` (HMAC-SHA256 with a fixed
label, as the signaling token key is): every API node signs with the same key and it rotates with the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SIGNING_PREFIX: Final = b"tbib-cmd-v1."
KEY_LABEL: Final = b"tbib gateway command key v1"
DEFAULT_TTL_S: Final = 60.0


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def key_id(public_key: bytes) -> str:
    """16 hex digits of the SHA-256 of the raw public key (the envelope's ``kid``)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SignedCommand:
    """A command ready to publish: its ``id`` (nonce, also the call id) and the envelope bytes."""

    id: str
    expires_at: float
    message: bytes


class CommandSigner:
    """Sign commands with one Ed25519 key (from a 32-byte seed)."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.kid = key_id(self.public_key)

    @classmethod
    def from_secret(cls, secret_key: str) -> CommandSigner:
        """The server's signer, derived from its ``secret_key``."""
        return cls(hmac.new(secret_key.encode(), KEY_LABEL, hashlib.sha256).digest())

    @property
    def public_key_text(self) -> str:
        """The public key as gateways configure it (``commands.server_keys``): base64url, 43 characters."""
        return b64url(self.public_key)

    def sign(
        self, gateway_id: str, cmd: str, args: dict[str, Any], *, now: float, ttl_s: float = DEFAULT_TTL_S
    ) -> SignedCommand:
        """A fresh command (new random id) valid from ``now`` for ``ttl_s`` seconds."""
        cid = secrets.token_hex(16)
        body = {"gateway_id": gateway_id, "id": cid, "cmd": cmd, "iat": round(now, 3), "exp": round(now + ttl_s, 3),
                "args": args}  # fmt: skip
        return self.sign_body(body)

    def sign_body(self, body: dict[str, Any]) -> SignedCommand:
        """Sign an arbitrary body as given (tests build invalid ones with it)."""
        payload = b64url(json.dumps(body, separators=(",", ":")).encode())
        sig = self._key.sign(SIGNING_PREFIX + payload.encode("ascii"))
        env = {"v": 1, "alg": "Ed25519", "kid": self.kid, "payload": payload, "sig": b64url(sig)}
        return SignedCommand(str(body.get("id")), float(body.get("exp", 0)), json.dumps(env).encode())

    def join(self, gateway_id: str, *, room: str, token: str, server: str, now: float, ttl_s: float = DEFAULT_TTL_S
             ) -> SignedCommand:  # fmt: skip
        """``join``: the gateway's consult agent joins the room with ``token`` at ``server``."""
        return self.sign(gateway_id, "join", {"room": room, "token": token, "server": server}, now=now, ttl_s=ttl_s)
