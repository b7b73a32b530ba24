"""The gateway's command verifier (pure): good commands pass; forgeries, expired, replayed and malformed ones are
refused with their reason and counted; fuzzed input only ever raises CommandRejectedError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_agent.commands import CommandVerifier, parse_public_key
from gateway_agent.errors import CommandRejectedError
from teleconsult.calls.command import CommandSigner, b64url

NOW = 1_800_000_000.0
SIGNER = CommandSigner(b"\x01" * 32)
OTHER = CommandSigner(b"\x02" * 32)
ARGS = {"room": "room-1", "token": "tok", "server": "https://tbib.example"}


def verifier(**kw: object) -> CommandVerifier:
    return CommandVerifier(gateway_id="gw-1", public_keys=[SIGNER.public_key], **kw)  # type: ignore[arg-type]


def body(**over: object) -> dict[str, object]:
    b: dict[str, object] = {"gateway_id": "gw-1", "id": "a" * 32, "cmd": "join", "iat": NOW, "exp": NOW + 60,
                            "args": dict(ARGS)}  # fmt: skip
    b.update(over)
    return b


def rejected(v: CommandVerifier, message: bytes, now: float = NOW) -> str:
    with pytest.raises(CommandRejectedError) as info:
        v.verify(message, now)
    return info.value.reason


def test_a_signed_join_is_accepted() -> None:
    v = verifier()
    signed = SIGNER.join("gw-1", room="room-1", token="tok", server="https://tbib.example", now=NOW)
    cmd = v.verify(signed.message, NOW + 1)
    assert (cmd.cmd, cmd.id, cmd.gateway_id, dict(cmd.args)) == ("join", signed.id, "gw-1", ARGS)
    assert cmd.expires_at == pytest.approx(NOW + 60)
    assert v.accepted == 1
    assert not v.rejected


def test_public_key_text_round_trip() -> None:
    assert parse_public_key(SIGNER.public_key_text) == SIGNER.public_key
    with pytest.raises(ValueError, match="32 bytes"):
        parse_public_key(b64url(b"short"))


def test_bad_signature_and_unknown_key() -> None:
    v = verifier()
    good = json.loads(SIGNER.sign_body(body()).message)
    forged = json.loads(OTHER.sign_body(body()).message)
    assert rejected(v, json.dumps(forged).encode()) == "unknown-key"
    forged["kid"] = good["kid"]  # claims our key, signed with another
    assert rejected(v, json.dumps(forged).encode()) == "bad-signature"
    tampered = dict(good, payload=b64url(json.dumps(body(gateway_id="gw-1", exp=NOW + 90)).encode()))
    assert rejected(v, json.dumps(tampered).encode()) == "bad-signature"
    assert v.rejected == {"unknown-key": 1, "bad-signature": 2}
    assert v.accepted == 0


def test_expired_not_yet_valid_and_too_long() -> None:
    v = verifier(skew=30.0, max_lifetime=120.0)
    msg = SIGNER.sign_body(body()).message
    assert rejected(v, msg, NOW + 60) == "expired"
    assert rejected(v, msg, NOW - 31) == "not-yet-valid"
    assert v.verify(msg, NOW - 29).id == "a" * 32  # within the clock skew
    assert rejected(v, SIGNER.sign_body(body(id="b" * 32, exp=NOW + 121)).message) == "too-long-lived"
    assert rejected(v, SIGNER.sign_body(body(id="c" * 32, exp=NOW)).message) == "too-long-lived"
    assert v.rejected == {"expired": 1, "not-yet-valid": 1, "too-long-lived": 2}


def test_replay_is_refused_until_expiry_and_survives_a_restart() -> None:
    v = verifier()
    msg = SIGNER.sign_body(body()).message
    v.verify(msg, NOW)
    assert rejected(v, msg, NOW + 10) == "replayed"
    restarted = verifier()
    restarted.remember(v.remembered(), NOW + 20)
    assert rejected(restarted, msg, NOW + 20) == "replayed"
    assert rejected(restarted, msg, NOW + 61) == "expired"  # after its window it cannot be replayed anyway
    restarted.remember({"x" * 32: NOW + 120}, NOW + 91)
    assert set(restarted.remembered()) == {"x" * 32}  # the first id was forgotten after exp + skew


def test_wrong_gateway_and_unsupported() -> None:
    v = verifier()
    assert rejected(v, SIGNER.sign_body(body(gateway_id="gw-2")).message) == "wrong-gateway"
    assert rejected(v, SIGNER.sign_body(body(cmd="reboot")).message) == "unsupported"
    env = json.loads(SIGNER.sign_body(body()).message)
    assert rejected(v, json.dumps(dict(env, alg="HS256")).encode()) == "unsupported"


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"v": 2}',
        b'{"v": 1, "alg": "Ed25519"}',
        b'{"v": 1, "alg": "Ed25519", "payload": "!!", "sig": "??", "kid": "x"}',
        b"{" + b" " * 20000 + b"}",
    ],
)
def test_malformed_envelopes(message: bytes) -> None:
    v = verifier()
    assert rejected(v, message) == "malformed"


@pytest.mark.parametrize(
    "over",
    [
        {"id": "short"},
        {"iat": "yesterday"},
        {"exp": True},
        {"args": []},
        {"args": {"room": "r", "token": "t"}},
        {"args": {"room": "r", "token": "t", "server": "file:///etc/passwd"}},
    ],
)
def test_malformed_signed_bodies(over: dict[str, object]) -> None:
    v = verifier()
    assert rejected(v, SIGNER.sign_body(body(**over)).message) == "malformed"


def test_signed_payload_that_is_not_json() -> None:
    env = json.loads(SIGNER.sign_body(body()).message)
    from teleconsult.calls.command import SIGNING_PREFIX

    payload = b64url(b"\x00not json")
    sig = SIGNER._key.sign(SIGNING_PREFIX + payload.encode())
    bad = dict(env, payload=payload, sig=b64url(sig))
    assert rejected(verifier(), json.dumps(bad).encode()) == "malformed"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.from_regex(r'\{"v": ?1,.*\}', fullmatch=True).map(str.encode))
def test_fuzz_only_command_rejected_escapes(message: bytes) -> None:
    v = verifier()
    with pytest.raises(CommandRejectedError):
        v.verify(message, NOW)
    assert sum(v.rejected.values()) == 1
