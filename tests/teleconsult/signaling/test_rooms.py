"""The pure signaling core: join order, lobby, admit/deny, room full, tokens, malformed frames, rate limit, grace."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from teleconsult.signaling.core import SignalingConfig
from teleconsult.signaling.rooms import CLOSE_DENIED, CLOSE_ENDED, CLOSE_POLICY, CLOSE_REPLACED, RecordKind
from teleconsult.signaling.tokens import Role

from .helpers import KEY, T0, Driver, token

D, P, INT, X = 1, 2, 3, 4  # doctor, patient, interpreter, intruder connections


def admitted_call() -> Driver:
    d = Driver()
    d.join(D, Role.DOCTOR)
    d.join(P, Role.AGENT, sub="gw-1")
    d.send(D, "admit", seat="patient")
    d.take(D)
    d.take(P)
    return d


def test_hello_on_connect_is_stamped() -> None:
    d = Driver()
    d.connect(D)
    hello = d.last(D)
    assert hello["type"] == "hello"
    assert hello["v"] == 1
    assert hello["seq"] == 1
    assert hello["from"] == "server"
    assert hello["max_frame_bytes"] == 64 * 1024
    assert hello["ts"] == "2026-11-29T10:00:00Z"


def test_doctor_first_then_patient_waits_then_admitted() -> None:
    d = Driver()
    d.join(D, Role.DOCTOR)
    joined = d.last(D)
    assert joined["type"] == "joined"
    assert joined["seat"] == "doctor"
    assert joined["peers"] == []
    assert joined["iceServers"] == []
    d.join(P, Role.PATIENT, sub="pat-7")
    assert d.types(P) == ["hello", "lobby"]
    assert d.last(D) == d.last(D) | {
        "type": "lobby",
        "waiting": [{"seat": "patient", "role": "patient", "subject": "pat-7"}],
    }
    d.send(D, "admit", seat="patient")
    assert d.types(P)[-1] == "joined"
    assert d.last(P)["peers"] == [{"seat": "doctor", "role": "doctor", "connected": True}]
    assert [f["type"] for f in d.take(D)][-2:] == ["peer-joined", "lobby"]
    assert d.inbox[D] == []
    kinds = [(r.kind, r.seat) for r in d.records]
    assert kinds[0] == (RecordKind.STARTED, None)
    assert (RecordKind.ADMITTED, "patient") in [(k, s and s.value) for k, s in kinds]
    admitted = next(r for r in d.records if r.kind is RecordKind.ADMITTED)
    assert admitted.by == "doctor-1"
    assert admitted.subject == "pat-7"


def test_patient_first_waits_until_doctor_arrives() -> None:
    d = Driver()
    d.join(P, Role.PATIENT)
    assert d.last(P)["type"] == "lobby"
    d.join(D, Role.DOCTOR)
    assert d.types(D) == ["hello", "joined", "lobby"]
    assert d.last(D)["waiting"][0]["seat"] == "patient"
    # the waiting patient cannot signal yet
    d.send(P, "offer", sdp="v=0")
    assert d.last(P)["code"] == "not-admitted"


def test_deny_closes_the_waiting_connection_and_frees_the_seat() -> None:
    d = Driver()
    d.join(D, Role.DOCTOR)
    d.join(P, Role.PATIENT)
    d.send(D, "deny", seat="patient", reason="wrong appointment")
    assert d.last(P)["type"] == "deny"
    assert d.last(P)["reason"] == "wrong appointment"
    assert d.closed[P][0] == CLOSE_DENIED
    assert d.last(D) == d.last(D) | {"type": "lobby", "waiting": []}
    assert any(r.kind is RecordKind.DENIED and r.by == "doctor-1" for r in d.records)
    # the seat is free again: another attempt waits again
    d.join(5, Role.PATIENT)
    assert d.last(5)["type"] == "lobby"


def test_admit_and_deny_are_doctor_only() -> None:
    d = Driver()
    d.join(D, Role.DOCTOR)
    d.join(INT, Role.INTERPRETER)
    d.join(P, Role.PATIENT)
    d.send(P, "admit", seat="interpreter")
    assert d.last(P)["code"] == "forbidden"
    d.send(D, "admit", seat="interpreter")
    d.send(INT, "admit", seat="patient")
    err = d.last(INT)
    assert err["code"] == "forbidden"
    assert err["re"] == 2
    d.send(D, "admit", seat="doctor")
    assert d.last(D)["code"] == "not-waiting"


def test_relay_offer_answer_candidates_between_admitted_seats() -> None:
    d = admitted_call()
    d.send(D, "offer", sdp="v=0 offer")
    offer = d.last(P)
    assert (offer["type"], offer["from"], offer["sdp"]) == ("offer", "doctor", "v=0 offer")
    assert "to" not in offer
    cand = {"candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
    d.send(D, "candidate", candidate=cand)
    assert d.last(P)["candidate"] == cand
    d.send(D, "candidate", candidate=None)
    assert d.last(P)["candidate"] is None
    d.send(P, "answer", sdp="v=0 answer", to="doctor")
    assert d.last(D)["sdp"] == "v=0 answer"
    assert d.last(D)["from"] == "patient"
    d.send(P, "renegotiate-request", reason="camera changed")
    assert d.last(D)["type"] == "renegotiate-request"
    assert d.last(D)["reason"] == "camera changed"
    # server sequence numbers per connection are strictly increasing
    seqs = [f["seq"] for f in d.take(D)]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


def test_relay_needs_to_with_three_seats_and_a_present_target() -> None:
    d = admitted_call()
    d.join(INT, Role.INTERPRETER)
    d.send(D, "admit", seat="interpreter")
    d.send(D, "offer", sdp="v=0")
    assert d.last(D)["code"] == "no-recipient"
    d.send(D, "offer", sdp="v=0", to="interpreter")
    assert d.last(INT)["type"] == "offer"
    d.send(D, "offer", sdp="v=0", to="doctor")
    assert d.last(D)["code"] == "peer-unavailable"


def test_room_full_when_seat_taken_by_someone_else() -> None:
    d = admitted_call()
    d.join(X, Role.PATIENT, sub="pat-9")  # the patient's browser while the agent holds the seat
    err = d.last(X)
    assert err["code"] == "room-full"
    assert X not in d.closed
    d.join(6, Role.DOCTOR, sub="doctor-2")
    assert d.last(6)["code"] == "room-full"


def test_expired_forged_and_foreign_tokens() -> None:
    d = Driver()
    d.connect(X)
    d.send(X, "join", token=token(Role.DOCTOR, now=T0 - timedelta(minutes=11)))
    assert d.last(X)["code"] == "token-expired"
    d.send(X, "join", token=token(Role.DOCTOR, key=b"z" * 32))
    assert d.last(X)["code"] == "bad-token"
    d.send(X, "join", token="not.a.jwt")
    assert d.last(X)["code"] == "bad-token"
    d.send(X, "join", token=token(Role.DOCTOR)[:-3] + "AAA")
    assert d.last(X)["code"] == "bad-token"
    assert X not in d.closed
    assert d.core.rooms == {}
    # a valid one still works on the same connection
    d.send(X, "join", token=token(Role.DOCTOR))
    assert d.last(X)["type"] == "joined"


def test_wrong_role_claim_is_refused() -> None:
    import jwt

    d = Driver()
    d.connect(X)
    forged_role = jwt.encode(
        {"sub": "u", "cid": "c1", "role": "surgeon", "aud": "tbib-signaling", "exp": int(T0.timestamp()) + 60},
        KEY,
        algorithm="HS256",
    )
    d.send(X, "join", token=forged_role)
    assert d.last(X)["code"] == "bad-token"
    none_alg = jwt.encode({"sub": "u", "cid": "c1", "role": "doctor", "aud": "tbib-signaling"}, None, algorithm="none")  # type: ignore[arg-type]
    d.send(X, "join", token=none_alg)
    assert d.last(X)["code"] == "bad-token"


def test_token_scoped_to_its_consultation() -> None:
    d = Driver()
    d.join(D, Role.DOCTOR, cid="c1")
    d.join(P, Role.PATIENT, cid="c2")
    assert d.last(P)["type"] == "lobby"
    assert set(d.core.rooms) == {"c1", "c2"}
    assert d.last(D)["type"] == "joined"  # the doctor of c1 heard nothing about c2


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "malformed"),
        ("[1,2]", "malformed"),
        ('{"v":1,"seq":1}', "malformed"),
        ('{"v":1,"seq":1,"type":"launch"}', "malformed"),
        ('{"v":2,"seq":1,"type":"ping"}', "unsupported-version"),
        ('{"v":1,"seq":-1,"type":"ping"}', "malformed"),
        ('{"v":1,"seq":"1","type":"ping"}', "malformed"),
        ('{"v":1,"seq":1,"type":"ping","extra":1}', "malformed"),
        ('{"v":1,"seq":1,"type":"offer","sdp":""}', "malformed"),
        ('{"v":1,"seq":1,"type":"admit","seat":"janitor"}', "malformed"),
        (b"\xff\xfe", "malformed"),
        ("x" * (64 * 1024 + 1), "too-large"),
    ],
)
def test_malformed_frames_get_error_and_connection_survives(raw: str | bytes, code: str) -> None:
    d = admitted_call()
    d.raw(D, raw)
    err = d.last(D)
    assert err["type"] == "error"
    assert err["code"] == code
    assert D not in d.closed
    d.seq[D] = 100
    d.send(D, "ping")
    assert d.last(D)["type"] == "pong"
    assert d.last(D)["re"] == 101


def test_seq_must_increase() -> None:
    d = admitted_call()
    d.raw(D, json.dumps({"v": 1, "seq": 1, "type": "ping"}))
    assert d.last(D)["code"] == "bad-seq"


def test_not_joined_and_already_joined() -> None:
    d = Driver()
    d.connect(X)
    d.send(X, "offer", sdp="v=0")
    assert d.last(X)["code"] == "not-joined"
    d.join(D, Role.DOCTOR)
    d.send(D, "join", token=token(Role.DOCTOR))
    assert d.last(D)["code"] == "already-joined"


def test_rate_limit_refuses_then_recovers() -> None:
    d = Driver(SignalingConfig(token_key=KEY, rate_per_second=5, rate_burst=10, max_violations=1000))
    d.join(D, Role.DOCTOR)
    d.take(D)
    for _ in range(20):
        d.send(D, "ping")
    frames = d.take(D)
    assert [f["type"] for f in frames].count("pong") == 9  # the join used one token of the burst
    assert all(f["code"] == "rate-limited" for f in frames if f["type"] == "error")
    d.tick(1.0)
    for _ in range(5):
        d.send(D, "ping")
    assert d.types(D) == ["pong"] * 5
    assert D not in d.closed


def test_repeated_violations_close_the_connection() -> None:
    d = Driver(SignalingConfig(token_key=KEY, max_violations=3))
    d.connect(X)
    for _ in range(3):
        d.raw(X, "garbage")
    assert d.closed[X][0] == CLOSE_POLICY


def test_grace_period_keeps_the_seat_for_a_reconnect() -> None:
    d = admitted_call()
    d.drop(P)
    left = d.last(D)
    assert (left["type"], left["seat"], left["reason"], left["temporary"]) == (
        "peer-left",
        "patient",
        "disconnected",
        True,
    )
    assert d.core.get_timer() == T0 + timedelta(seconds=30)
    d.send(D, "offer", sdp="v=0")
    assert d.last(D)["code"] == "peer-unavailable"
    d.tick(20)
    d.timer()
    d.join(5, Role.AGENT, sub="gw-1")
    joined = d.last(5)
    assert joined["type"] == "joined"
    assert joined["resumed"] is True
    assert d.last(D)["type"] == "peer-joined"
    assert d.last(D)["resumed"] is True
    assert d.core.get_timer() is None


def test_grace_period_expiry_frees_the_seat() -> None:
    d = admitted_call()
    d.drop(P)
    d.tick(30)
    d.timer()
    assert d.last(D)["type"] == "peer-left"
    assert d.last(D)["reason"] == "timeout"
    assert any(r.kind is RecordKind.LEFT and r.reason == "timeout" for r in d.records)
    # someone else may take the seat now, and must wait in the lobby
    d.join(6, Role.PATIENT, sub="pat-2")
    assert d.last(6)["type"] == "lobby"


def test_empty_room_is_dropped_after_grace() -> None:
    d = admitted_call()
    d.drop(P)
    d.drop(D)
    assert "c1" in d.core.rooms
    d.tick(31)
    d.timer()
    assert d.core.rooms == {}


def test_same_subject_second_connection_replaces_the_first() -> None:
    d = admitted_call()
    d.join(7, Role.DOCTOR)
    assert d.closed[D][0] == CLOSE_REPLACED
    assert d.last(7)["type"] == "joined"
    d.send(7, "offer", sdp="v=0")
    assert d.last(P)["type"] == "offer"


def test_waiting_patient_who_drops_leaves_the_lobby() -> None:
    d = Driver()
    d.join(D, Role.DOCTOR)
    d.join(P, Role.PATIENT)
    d.drop(P)
    assert d.last(D) == d.last(D) | {"type": "lobby", "waiting": []}


def test_bye_and_end() -> None:
    d = admitted_call()
    d.join(INT, Role.INTERPRETER)
    d.send(D, "admit", seat="interpreter")
    d.send(INT, "bye")
    assert d.last(D)["type"] == "peer-left"
    assert d.closed[INT][0] == 1000
    d.send(D, "bye", end=True, reason="done")
    assert d.last(P)["type"] == "bye"
    assert d.last(P)["end"] is True
    assert d.closed[P][0] == CLOSE_ENDED
    assert d.closed[D][0] == CLOSE_ENDED
    assert d.records[-1].kind is RecordKind.ENDED
    assert d.core.rooms == {}


def test_patient_end_flag_only_leaves() -> None:
    d = admitted_call()
    d.send(P, "bye", end=True)
    assert d.last(D)["type"] == "peer-left"
    assert "c1" in d.core.rooms


def test_ended_consultation_cannot_be_reopened_with_a_valid_token() -> None:
    d = admitted_call()
    d.send(D, "bye", end=True)
    assert d.core.rooms == {}
    d.join(8, Role.DOCTOR)
    assert d.last(8)["code"] == "ended"
    assert "c1" in d.core.ended
    d.tick(24 * 3600 + 1)
    d.join(9, Role.DOCTOR)  # a day later (longer than any join token lives) the memory is dropped
    assert d.last(9)["type"] == "joined"
    assert d.core.ended == {}


def test_doctor_back_from_grace_sees_who_knocked_meanwhile() -> None:
    # the agent joins while the doctor's seat is in grace (its old connection gone): the lobby frame had nobody to
    # reach, so the doctor's reclaim must carry it (a room moved between API nodes hit this: the call never started)
    d = Driver()
    d.join(D, Role.DOCTOR)
    d.drop(D)
    d.join(P, Role.AGENT, sub="gw-1")
    assert d.types(P)[-1] == "lobby"
    d.join(5, Role.DOCTOR)
    frames = d.take(5)
    assert [f["type"] for f in frames][-2:] == ["joined", "lobby"]
    assert frames[-1]["waiting"][0]["seat"] == "patient"
    assert frames[-2]["resumed"] is True
