"""Signed access tokens (JWT, HS256), opaque refresh tokens and CSRF tokens. Pure functions, no I/O.

- Access token: JWT with ``sub`` (user id), ``sid`` (session id), ``role``, ``typ="access"``, ``iat``, ``exp``, ``iss``.
  Short-lived; every request also checks in the database that the session is live and the account enabled.
- Refresh token: ``"<session uuid>.<random>"``; only ``sha256(random)`` is stored. Each refresh rotates the random part;
  presenting a stale one revokes the session (it was stolen or replayed).
- CSRF token: ``HMAC(secret, "csrf:" + session id)``, bound to the session: a cookie planted by another site is useless.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import jwt

from teleconsult.errors import AuthenticationError
from teleconsult.security.models import Role

ALGORITHM: Final = "HS256"
_LEEWAY_S: Final = 0


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified content of an access token."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    role: Role
    expires_at: datetime


def issue_access_token(
    *, secret: str, issuer: str, user_id: uuid.UUID, session_id: uuid.UUID, role: Role, now: datetime, ttl_s: int
) -> str:
    """A signed access token valid for ``ttl_s`` seconds from ``now``."""
    payload = {
        "sub": str(user_id),
        "sid": str(session_id),
        "role": role.value,
        "typ": "access",
        "iss": issuer,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_s)).timestamp()),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode_access_token(token: str, *, secret: str, issuer: str, now: datetime | None = None) -> AccessClaims:
    """Verify signature, expiry, issuer and type; raise :class:`AuthenticationError` otherwise."""
    options: jwt.types.Options = {"require": ["exp", "iat", "sub", "sid", "iss"]}
    try:
        if now is not None:  # deterministic tests: check expiry against the given clock
            options["verify_exp"] = False
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=issuer, options=options, leeway=_LEEWAY_S)
        _check_claims(claims, now)
        return AccessClaims(
            user_id=uuid.UUID(str(claims["sub"])),
            session_id=uuid.UUID(str(claims["sid"])),
            role=Role(claims["role"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=UTC),
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthenticationError("token expired") from exc
    except (jwt.InvalidTokenError, ValueError, KeyError) as exc:
        raise AuthenticationError("invalid token") from exc


def _check_claims(claims: dict[str, object], now: datetime | None) -> None:
    if now is not None and int(str(claims["exp"])) <= int(now.timestamp()):
        raise jwt.ExpiredSignatureError("Signature has expired")
    if claims.get("typ") != "access":
        raise jwt.InvalidTokenError("not an access token")


def new_refresh_token(session_id: uuid.UUID) -> tuple[str, bytes]:
    """``(token for the client, hash to store)``."""
    raw = secrets.token_urlsafe(32)
    return f"{session_id}.{raw}", refresh_hash(raw)


def refresh_hash(raw: str) -> bytes:
    """What the database stores for the random part of a refresh token."""
    return hashlib.sha256(raw.encode()).digest()


def split_refresh_token(token: str) -> tuple[uuid.UUID, str]:
    """``(session id, random part)``; :class:`AuthenticationError` when malformed."""
    sid, sep, raw = token.partition(".")
    if not sep or not raw:
        raise AuthenticationError("invalid refresh token")
    try:
        return uuid.UUID(sid), raw
    except ValueError as exc:
        raise AuthenticationError("invalid refresh token") from exc


def csrf_token(secret: str, session_id: uuid.UUID) -> str:
    """The CSRF token of a session."""
    mac = hmac.new(secret.encode(), f"csrf:{session_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def check_csrf(secret: str, session_id: uuid.UUID, presented: str | None) -> bool:
    """Constant-time comparison of a presented ``X-CSRF-Token``."""
    return presented is not None and hmac.compare_digest(csrf_token(secret, session_id), presented)
