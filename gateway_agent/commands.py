"""Commands from the server (``tbib/v1/gw/{id}/commands``): pure, clock-free verification (no I/O, no clock).

Contract (``docs/mqtt.md``, ``docs/teleconsultation.md``): a command is a JSON envelope, QoS 1, not retained::

    {"v": 1, "alg": "Ed25519", "kid": "<16 hex>", "payload": "<base64url of the JSON body>", "sig": "<base64url>"}

- ``sig`` is the Ed25519 signature of ``b"tbib-cmd-v1." + payload`` (the ASCII bytes of the base64url text as sent:
  no JSON canonicalisation is needed, and the prefix keeps a signature over anything else from ever verifying here).
  ``kid`` is the first 8 bytes (hex) of the SHA-256 of the raw 32-byte public key: it picks one of the keys the
  gateway trusts (a rotation keeps the old and new key for a while).
- The body: ``{"gateway_id", "id" (16-64 chars, unique: the nonce), "cmd" ("join"), "iat", "exp" (Unix seconds),
  "args": {...}}``. For ``join``: ``args = {"room": "<consultation id>", "token": "<agent join token>",
  "server": "<https or wss base URL>"}``.
- Accepted when: the signature verifies with a trusted key; ``gateway_id`` is ours; ``iat - skew <= now < exp``;
  ``exp - iat <= max_lifetime``; ``id`` was not accepted before (remembered until ``exp + skew``, so a replay inside
  the validity window is refused and one after it is expired anyway).

Every refusal raises :class:`~gateway_agent.errors.CommandRejectedError` with a ``reason`` code (``malformed``,
``unknown-key``, ``bad-signature``, ``wrong-gateway``, ``expired``, ``not-yet-valid``, ``too-long-lived``,
``replayed``, ``unsupported``) and is counted in :attr:`CommandVerifier.rejected`. The ``now`` the caller passes is
the wall clock (Unix seconds): the gateway's clock is NTP-synchronised; ``skew`` absorbs what is left.

Why Ed25519 and not an HMAC per gateway: the broker lets every service account (ingest workers included) write any
gateway's commands, and a gateway may write under its own prefix. With a signature only the API nodes, which hold the
private key, can issue a command; gateways hold nothing secret for it (a public key in their config), and the server
stores no per-gateway command secret that a database leak would expose.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway_agent.errors import CommandRejectedError

SIGNING_PREFIX: Final = b"tbib-cmd-v1."
MAX_COMMAND_BYTES: Final = 16 * 1024
MAX_REMEMBERED: Final = 10_000
COMMANDS: Final = frozenset({"join"})


@dataclass(frozen=True, slots=True)
class Command:
    """A verified command."""

    id: str
    cmd: str
    gateway_id: str
    issued_at: float
    expires_at: float
    args: Mapping[str, Any]


def b64url_decode(text: str) -> bytes:
    """base64url with or without padding; ``ValueError`` when it is not."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url text")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64url: {exc}") from exc


def key_id(public_key: bytes) -> str:
    """``kid``: 16 hex digits of the SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def parse_public_key(text: str) -> bytes:
    """A raw 32-byte Ed25519 public key from its base64url (or base64) text."""
    raw = b64url_decode(text.strip().replace("+", "-").replace("/", "_"))
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    return raw


def _str(body: Mapping[str, Any], name: str, *, lo: int = 1, hi: int = 4096) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not lo <= len(value) <= hi:
        raise CommandRejectedError(f"field {name!r} must be a string of {lo}-{hi} characters", reason="malformed")
    return value


def _time(body: Mapping[str, Any], name: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e11:
        raise CommandRejectedError(f"field {name!r} must be a Unix time in seconds", reason="malformed")
    return float(value)


def _join_args(args: Mapping[str, Any]) -> None:
    _str(args, "room", hi=128)
    _str(args, "token", hi=4096)
    server = _str(args, "server", hi=2048)
    if not server.startswith(("https://", "http://", "wss://", "ws://")):
        raise CommandRejectedError("join: 'server' must be an http(s):// or ws(s):// URL", reason="malformed")


@dataclass(slots=True)
class CommandVerifier:
    """Verify commands for ``gateway_id`` signed by one of ``public_keys`` (raw 32 bytes each)."""

    gateway_id: str
    public_keys: Iterable[bytes]
    max_lifetime: float = 120.0
    """Longest ``exp - iat`` accepted (seconds)."""
    skew: float = 30.0
    """Clock difference tolerated between the server and the gateway (seconds)."""
    accepted: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    """Refusals by reason."""
    _keys: dict[str, Ed25519PublicKey] = field(init=False, default_factory=dict)
    _seen: dict[str, float] = field(init=False, default_factory=dict)
    """Accepted command ids -> until when they are remembered (insertion order is acceptance order)."""

    def __post_init__(self) -> None:
        for raw in self.public_keys:
            self._keys[key_id(raw)] = Ed25519PublicKey.from_public_bytes(raw)

    def verify(self, message: bytes, now: float) -> Command:
        """The command in ``message``, or :class:`CommandRejectedError` (counted)."""
        try:
            command = self._verify(message, now)
        except CommandRejectedError as exc:
            self.rejected[exc.reason] += 1
            raise
        self.accepted += 1
        return command

    def remembered(self) -> dict[str, float]:
        """Accepted ids and until when they are refused as replays (to persist across restarts)."""
        return dict(self._seen)

    def remember(self, seen: Mapping[str, float], now: float) -> None:
        """Restore :meth:`remembered` (after a restart); ids already past their time are dropped."""
        for cid, until in seen.items():
            if isinstance(cid, str) and isinstance(until, int | float) and until > now:
                self._seen[cid] = float(until)
        self._forget(now)

    def _forget(self, now: float) -> None:
        for cid in [c for c, until in self._seen.items() if until <= now]:
            del self._seen[cid]
        while len(self._seen) > MAX_REMEMBERED:  # bounded: the oldest go first (they expire first too)
            del self._seen[next(iter(self._seen))]

    def _verify(self, message: bytes, now: float) -> Command:
        if len(message) > MAX_COMMAND_BYTES:
            raise CommandRejectedError(f"command of {len(message)} bytes (max {MAX_COMMAND_BYTES})", reason="malformed")
        try:
            env = json.loads(message)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CommandRejectedError(f"command is not JSON: {exc}"[:200], reason="malformed") from exc
        if not isinstance(env, dict) or env.get("v") != 1:
            raise CommandRejectedError("command is not a v1 envelope object", reason="malformed")
        if env.get("alg") != "Ed25519":
            raise CommandRejectedError(f"unsupported alg {str(env.get('alg'))[:32]!r}", reason="unsupported")
        payload = _str(env, "payload", hi=MAX_COMMAND_BYTES)
        try:
            signature = b64url_decode(_str(env, "sig", hi=200))
            body_bytes = b64url_decode(payload)
        except ValueError as exc:
            raise CommandRejectedError(f"payload or sig: {exc}", reason="malformed") from exc
        key = self._keys.get(str(env.get("kid")))
        if key is None:
            raise CommandRejectedError(f"no trusted key with kid {str(env.get('kid'))[:32]!r}", reason="unknown-key")
        try:
            key.verify(signature, SIGNING_PREFIX + payload.encode("ascii"))
        except InvalidSignature:
            raise CommandRejectedError("signature does not verify", reason="bad-signature") from None
        # Signed by the server from here on: a malformed body is a server bug, still refused with a clear reason.
        try:
            body = json.loads(body_bytes)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CommandRejectedError(f"signed payload is not JSON: {exc}"[:200], reason="malformed") from exc
        if not isinstance(body, dict):
            raise CommandRejectedError("signed payload is not an object", reason="malformed")
        if _str(body, "gateway_id", hi=64) != self.gateway_id:
            raise CommandRejectedError(f"command for gateway {body['gateway_id']!r}", reason="wrong-gateway")
        cid = _str(body, "id", lo=16, hi=64)
        cmd = _str(body, "cmd", hi=32)
        iat, exp = _time(body, "iat"), _time(body, "exp")
        args = body.get("args", {})
        if not isinstance(args, dict):
            raise CommandRejectedError("field 'args' must be an object", reason="malformed")
        if exp - iat > self.max_lifetime or exp <= iat:
            raise CommandRejectedError(
                f"lifetime {exp - iat:.0f} s (max {self.max_lifetime:.0f})", reason="too-long-lived"
            )
        if now >= exp:
            raise CommandRejectedError(f"expired {now - exp:.1f} s ago", reason="expired")
        if now < iat - self.skew:
            raise CommandRejectedError(f"issued {iat - now:.1f} s in the future", reason="not-yet-valid")
        self._forget(now)
        if cid in self._seen:
            raise CommandRejectedError(f"command {cid} was already accepted", reason="replayed")
        if cmd not in COMMANDS:
            raise CommandRejectedError(f"unsupported command {cmd!r}", reason="unsupported")
        if cmd == "join":
            _join_args(args)
        self._seen[cid] = exp + self.skew
        return Command(cid, cmd, self.gateway_id, iat, exp, args)
