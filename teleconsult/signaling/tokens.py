"""Consultation join tokens: short-lived HS256 JWTs scoped to (consultation, role).

Claims: ``sub`` (user or gateway id), ``cid`` (consultation id), ``role`` (:class:`Role`), ``aud`` = ``tbib-signaling``,
``iat``, ``exp``, ``jti``, and for an invited guest ``name`` (the name the doctor
gave, shown in the waiting room). Verification takes the key and ``now`` explicitly, so tests need no clock patching.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

import jwt

from teleconsult.errors import TokenError

AUDIENCE: Final = "tbib-signaling"
ALGORITHM: Final = "HS256"
#: A join token is only needed to enter (or re-enter) the room: keep it short.
DEFAULT_TTL: Final = timedelta(minutes=10)
MIN_KEY_BYTES: Final = 32


class Role(StrEnum):
    """Who a token lets in. ``patient`` and ``agent`` share the patient seat; the guest roles come from invitations."""

    DOCTOR = "doctor"
    PATIENT = "patient"
    AGENT = "agent"
    INTERPRETER = "interpreter"
    NURSE = "nurse"
    FAMILY = "family"


#: Roles an invitation link may carry (a guest without an account).
GUEST_ROLES: Final = frozenset({Role.NURSE, Role.INTERPRETER, Role.FAMILY})
MAX_NAME_CHARS: Final = 80


@dataclass(frozen=True, slots=True)
class JoinClaims:
    """The verified content of a join token."""

    consultation_id: str
    role: Role
    subject: str
    expires_at: datetime
    token_id: str
    name: str | None = None


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"signaling key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")


def issue_token(
    *,
    key: bytes,
    consultation_id: str,
    role: Role,
    subject: str,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
    name: str | None = None,
) -> str:
    """A signed join token valid from ``now`` for ``ttl``."""
    _check_key(key)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    claims = {
        "sub": subject,
        "cid": consultation_id,
        "role": role.value,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": secrets.token_urlsafe(12),
    }
    if name is not None:
        claims["name"] = name[:MAX_NAME_CHARS]
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_token(token: str, *, key: bytes, now: datetime) -> JoinClaims:
    """Check signature, audience, expiry (against ``now``, no leeway) and claim shapes; raise :class:`TokenError`."""
    _check_key(key)
    try:
        # Expiry is checked below against the caller's clock, not the system clock.
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"verify_exp": False, "verify_iat": False, "require": ["sub", "cid", "role", "exp", "aud"]},
        )
    except jwt.InvalidSignatureError as exc:
        raise TokenError("token signature is invalid", code="bad-token") from exc
    except jwt.PyJWTError as exc:
        raise TokenError(f"token is invalid: {exc}", code="bad-token") from exc
    exp = claims.get("exp")
    if not isinstance(exp, int):
        raise TokenError("token exp claim must be an integer", code="bad-token")
    if int(now.timestamp()) >= exp:
        raise TokenError("token has expired", code="token-expired")
    try:
        role = Role(claims["role"])
    except ValueError as exc:
        raise TokenError(f"token role {claims['role']!r} is not a signaling role", code="bad-token") from exc
    cid, sub = claims["cid"], claims["sub"]
    if not isinstance(cid, str) or not cid or not isinstance(sub, str) or not sub:
        raise TokenError("token cid and sub must be non-empty strings", code="bad-token")
    name = claims.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_CHARS):
        raise TokenError(f"token name must be a string of at most {MAX_NAME_CHARS} characters", code="bad-token")
    return JoinClaims(
        name=name,
        consultation_id=cid,
        role=role,
        subject=sub,
        expires_at=datetime.fromtimestamp(exp, tz=now.tzinfo),
        token_id=str(claims.get("jti", "")),
    )
