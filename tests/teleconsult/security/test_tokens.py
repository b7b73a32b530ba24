"""Access tokens, refresh tokens and CSRF tokens (pure)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from teleconsult.errors import AuthenticationError
from teleconsult.security import tokens
from teleconsult.security.models import Role

SECRET = "s" * 40
NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def _issue(**kw: object) -> str:
    args: dict[str, object] = {
        "secret": SECRET, "issuer": "tbib", "user_id": uuid.uuid4(), "session_id": uuid.uuid4(),
        "role": Role.DOCTOR, "now": NOW, "ttl_s": 300,
    }  # fmt: skip
    args.update(kw)
    return tokens.issue_access_token(**args)  # type: ignore[arg-type]


def test_round_trip() -> None:
    uid, sid = uuid.uuid4(), uuid.uuid4()
    t = _issue(user_id=uid, session_id=sid)
    c = tokens.decode_access_token(t, secret=SECRET, issuer="tbib", now=NOW + timedelta(seconds=10))
    assert (c.user_id, c.session_id, c.role) == (uid, sid, Role.DOCTOR)
    assert c.expires_at == NOW + timedelta(seconds=300)


def test_expired_token_refused() -> None:
    t = _issue()
    tokens.decode_access_token(t, secret=SECRET, issuer="tbib", now=NOW + timedelta(seconds=299))
    with pytest.raises(AuthenticationError, match="expired"):
        tokens.decode_access_token(t, secret=SECRET, issuer="tbib", now=NOW + timedelta(seconds=300))
    with pytest.raises(AuthenticationError, match="expired"):  # real clock: issued in the past
        tokens.decode_access_token(_issue(now=datetime.now(UTC) - timedelta(hours=1)), secret=SECRET, issuer="tbib")


def _b64(d: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def test_tampered_tokens_refused() -> None:
    t = _issue()
    header, payload, sig = t.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "admin"
    forged = [
        f"{header}.{_b64(claims)}.{sig}",  # payload changed, old signature
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",  # alg=none
        jwt.encode(claims, "another-secret-of-enough-length-123456", algorithm="HS256"),  # wrong key
        jwt.encode({**claims, "typ": "refresh"}, SECRET, algorithm="HS256"),  # not an access token
        jwt.encode({**claims, "iss": "evil"}, SECRET, algorithm="HS256"),  # wrong issuer
        t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature bytes changed
        "garbage",
    ]
    for f in forged:
        with pytest.raises(AuthenticationError):
            tokens.decode_access_token(f, secret=SECRET, issuer="tbib", now=NOW)


def test_refresh_token_and_csrf() -> None:
    sid = uuid.uuid4()
    token, digest = tokens.new_refresh_token(sid)
    got_sid, raw = tokens.split_refresh_token(token)
    assert got_sid == sid
    assert tokens.refresh_hash(raw) == digest
    for bad in ("nodot", "not-a-uuid.xyz", f"{sid}."):
        with pytest.raises(AuthenticationError):
            tokens.split_refresh_token(bad)
    csrf = tokens.csrf_token(SECRET, sid)
    assert tokens.check_csrf(SECRET, sid, csrf)
    assert not tokens.check_csrf(SECRET, uuid.uuid4(), csrf)
    assert not tokens.check_csrf("x" * 40, sid, csrf)
    assert not tokens.check_csrf(SECRET, sid, None)
