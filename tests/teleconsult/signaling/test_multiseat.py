"""Multi-seat rooms (issue 19 item 3) on the pure core: seat limit, guests admitted or refused, invitation rules,
state round trip through JSON (what the database keeps)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from teleconsult.signaling.core import SignalingConfig, SignalingCore
from teleconsult.signaling.invites import Invite, InviteError, check_new, check_redeem, hash_secret, new_secret
from teleconsult.signaling.tokens import Role

from .helpers import KEY, T0, Driver

DR, PAT, NURSE, INTERP, FAM, EXTRA = 1, 2, 3, 4, 5, 6


def test_four_seats_then_room_full_and_guest_admitted_with_name() -> None:
    d = Driver()
    d.join(DR, Role.DOCTOR)
    d.join(PAT, Role.PATIENT)
    d.join(NURSE, Role.NURSE, sub="invite-n", name="Salma (infirmière)")
    d.join(INTERP, Role.INTERPRETER, sub="invite-i", name="Youssef")
    lobby = d.last(DR)
    assert lobby["type"] == "lobby"
    assert [(w["seat"], w.get("name")) for w in lobby["waiting"]] == [
        ("patient", None),
        ("nurse", "Salma (infirmière)"),
        ("interpreter", "Youssef"),
    ]
    d.join(FAM, Role.FAMILY, sub="invite-f", name="Fatima")  # a fifth seat
    assert d.last(FAM)["code"] == "room-full"
    assert "at most 4" in d.last(FAM)["detail"]
    assert d.core.errors_sent["room-full"] == 1
    for seat in ("patient", "nurse"):
        d.send(DR, "admit", seat=seat)
    joined = next(f for f in d.inbox[NURSE] if f["type"] == "joined")
    assert {p["seat"] for p in joined["peers"]} == {"doctor", "patient"}
    # three admitted seats: relaying needs "to", and goes only to the named seat
    d.send(NURSE, "offer", sdp="v=0 nurse")
    assert d.last(NURSE)["code"] == "no-recipient"
    d.send(NURSE, "offer", to="patient", sdp="v=0 nurse")
    assert d.last(PAT) | {"seq": 0, "ts": ""} == {
        "v": 1, "seq": 0, "ts": "", "type": "offer", "sdp": "v=0 nurse", "from": "nurse"
    }  # fmt: skip
    assert any(f["type"] == "peer-joined" and f.get("name") == "Salma (infirmière)" for f in d.inbox[PAT])


def test_refused_guest_is_closed_and_its_seat_freed() -> None:
    d = Driver()
    d.join(DR, Role.DOCTOR)
    d.join(FAM, Role.FAMILY, sub="invite-f", name="Fatima")
    d.send(DR, "deny", seat="family", reason="not now")
    assert d.last(FAM) == d.inbox[FAM][-1]
    assert d.last(FAM)["type"] == "deny"
    assert d.closed[FAM][0] == 4003
    assert d.last(DR)["waiting"] == []
    d.send(FAM, "offer", to="doctor", sdp="x")  # a refused guest's socket no longer holds a seat
    assert d.last(FAM)["code"] == "not-joined"
    d.send(PAT, "admit", seat="family")  # unknown connection: nothing, no crash
    d.join(EXTRA, Role.NURSE, sub="invite-x")
    d.send(EXTRA, "admit", seat="nurse")  # only the doctor admits
    assert d.last(EXTRA)["code"] in {"not-admitted", "forbidden"}


def test_room_state_round_trips_through_json_between_inputs() -> None:
    """What the store does: unload after each input, load before the next, on another core (another node)."""
    cfg = SignalingConfig(token_key=KEY)
    node1, node2 = Driver(cfg), Driver(cfg)
    node1.join(DR, Role.DOCTOR)
    state, timer, ended = node1.core.unload("c1")
    assert state is not None
    assert timer is None
    assert ended is None
    node2.core.load("c1", state, None)
    node2.join(NURSE, Role.NURSE, sub="invite-n", name="Salma")
    assert node2.last(NURSE)["type"] == "lobby"
    forwarded = node2.core.take_forward()  # the doctor's lobby frame is for node 1's connection
    assert [a.frame["type"] for a in forwarded if hasattr(a, "frame")] == ["lobby"]
    delivered = node1.core.deliver(forwarded, node1.now)
    assert delivered[0].frame["waiting"][0]["name"] == "Salma"  # type: ignore[union-attr]
    assert delivered[0].frame["seq"] > 1  # type: ignore[union-attr]


def test_a_core_without_room_state_ignores_unknown_inputs() -> None:
    core = SignalingCore(SignalingConfig(token_key=KEY))
    assert core.room_of(99, "{}", T0) is None
    assert core.unload("nope") == (None, None, None)


def _invite(**kw: object) -> Invite:
    base: dict[str, object] = {
        "id": uuid.uuid4(), "consultation_id": uuid.uuid4(), "role": Role.INTERPRETER, "name": "Youssef",
        "created_at": T0, "expires_at": T0 + timedelta(hours=2),
    }  # fmt: skip
    return Invite(**(base | kw))  # type: ignore[arg-type]


def test_invitation_works_once_until_it_expires() -> None:
    inv = _invite()
    assert check_redeem(inv, T0 + timedelta(minutes=5), consultation_ended=False) is inv
    with pytest.raises(InviteError) as used:
        check_redeem(_invite(used_at=T0), T0 + timedelta(minutes=6), consultation_ended=False)
    assert used.value.code == "invite-used"
    with pytest.raises(InviteError) as late:
        check_redeem(inv, T0 + timedelta(hours=2), consultation_ended=False)
    assert late.value.code == "invite-expired"
    with pytest.raises(InviteError) as revoked:
        check_redeem(_invite(revoked_at=T0), T0, consultation_ended=False)
    assert revoked.value.code == "invite-revoked"
    with pytest.raises(InviteError) as ended:
        check_redeem(inv, T0, consultation_ended=True)
    assert ended.value.code == "ended"
    with pytest.raises(InviteError) as unknown:
        check_redeem(None, T0, consultation_ended=False)
    assert unknown.value.code == "invite-unknown"
    assert inv.status(T0) == "pending"
    assert inv.status(T0 + timedelta(hours=3)) == "expired"


def test_invitation_requests_are_checked() -> None:
    assert check_new(Role.FAMILY, "  Fatima   Zahra ", timedelta(hours=1)) == "Fatima Zahra"
    for role, name, ttl in [
        (Role.DOCTOR, "x", timedelta(hours=1)),
        (Role.AGENT, "x", timedelta(hours=1)),
        (Role.NURSE, "   ", timedelta(hours=1)),
        (Role.NURSE, "x" * 81, timedelta(hours=1)),
        (Role.NURSE, "x", timedelta(days=3)),
    ]:
        with pytest.raises(InviteError):
            check_new(role, name, ttl)
    secret, digest = new_secret()
    assert hash_secret(secret) == digest
    assert len(secret) >= 40
