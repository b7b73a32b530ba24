"""Join tokens and coturn REST credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta

import pytest

from teleconsult.errors import TokenError
from teleconsult.signaling.tokens import Role, issue_token, verify_token
from teleconsult.signaling.turn import IceConfig, ice_servers, turn_credentials

from .helpers import KEY, T0


def test_round_trip_and_expiry_against_given_now() -> None:
    tok = issue_token(key=KEY, consultation_id="c9", role=Role.AGENT, subject="gw-3", now=T0, ttl=timedelta(minutes=5))
    claims = verify_token(tok, key=KEY, now=T0 + timedelta(minutes=4, seconds=59))
    assert (claims.consultation_id, claims.role, claims.subject) == ("c9", Role.AGENT, "gw-3")
    assert claims.expires_at == T0 + timedelta(minutes=5)
    with pytest.raises(TokenError) as info:
        verify_token(tok, key=KEY, now=T0 + timedelta(minutes=5))
    assert info.value.code == "token-expired"


def test_forged_and_short_keys() -> None:
    tok = issue_token(key=KEY, consultation_id="c9", role=Role.DOCTOR, subject="d", now=T0)
    with pytest.raises(TokenError) as info:
        verify_token(tok, key=b"y" * 32, now=T0)
    assert info.value.code == "bad-token"
    with pytest.raises(ValueError):
        verify_token(tok, key=b"short", now=T0)


def test_coturn_rest_credentials_match_the_documented_formula() -> None:
    exp = T0 + timedelta(hours=1)
    user, password = turn_credentials(b"s3cret", "gw-1", exp)
    assert user == f"{int(exp.timestamp())}:gw-1"
    expected = base64.b64encode(hmac.new(b"s3cret", user.encode(), hashlib.sha1).digest()).decode()
    assert password == expected
    with pytest.raises(ValueError):
        turn_credentials(b"", "gw-1", exp)


def test_ice_servers_turn_first() -> None:
    cfg = IceConfig(
        turn_urls=("turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"),
        turn_secret=b"s3cret",
        stun_urls=("stun:stun.example.org:3478",),
        ttl=timedelta(minutes=30),
    )
    servers = ice_servers(cfg, "doctor-1", T0)
    assert servers[0]["urls"][0].startswith("turn:")
    assert servers[0]["username"] == f"{int((T0 + timedelta(minutes=30)).timestamp())}:doctor-1"
    assert servers[1] == {"urls": ["stun:stun.example.org:3478"]}
    assert ice_servers(IceConfig(), "x", T0) == []
