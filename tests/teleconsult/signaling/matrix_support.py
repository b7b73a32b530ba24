"""Authorization-matrix factories and probes for the consultation routes and the signaling socket (issue 8)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

CONSULT_DOCTOR = "doctor"


def consent_and_body(ctx: Any) -> dict[str, str]:
    """Grant teleconsultation consent for the patient, then the create body."""
    with psycopg.connect(ctx.seeded.dsn, autocommit=True) as conn:
        conn.execute(
            "insert into consents (patient_id, purpose, granted) values (%s, 'teleconsultation', true)",
            (ctx.patient_id,),
        )
    return {"reason": "follow-up"}


def consultation_id(ctx: Any) -> str:
    """A consultation of the patient led by the seeded doctor (the patient consents: join tokens need it)."""
    with psycopg.connect(ctx.seeded.dsn, autocommit=True) as conn:
        conn.execute(
            "insert into consents (patient_id, purpose, granted) values (%s, 'teleconsultation', true)",
            (ctx.patient_id,),
        )
        row = conn.execute(
            "insert into consultations (patient_id, doctor_id) values (%s, %s) returning id",
            (ctx.patient_id, ctx.seeded.users[CONSULT_DOCTOR]),
        ).fetchone()
    assert row is not None
    return str(row[0])


def join_token_body(ctx: Any) -> dict[str, str]:
    """Each caller asks for the seat that could be theirs."""
    return {"role": "patient" if ctx.caller == "patient" else "doctor"}


def create_policy(caller: str, assigned: bool) -> int:
    """Only a doctor on the care team opens a consultation."""
    if caller == "anonymous":
        return 401
    return 201 if caller == "doctor" and assigned else 403


def join_token_policy(caller: str, assigned: bool) -> int:
    """The assigned doctor and the patient themself get a token."""
    if caller == "anonymous":
        return 401
    return 200 if caller in {"doctor", "patient"} and assigned else 403


def signaling_probe(ctx: Any, url: str, token: str | None, patient_id: uuid.UUID) -> int:
    """The socket is open to all (``hello``); an access token is not a join token (``bad-token``); 200 when so."""
    from websockets.sync.client import connect

    with connect(url, open_timeout=5) as ws:
        hello = json.loads(ws.recv(timeout=5))
        if hello.get("type") != "hello":
            return 500
        ws.send(json.dumps({"v": 1, "seq": 1, "type": "join", "token": token or "none"}))
        reply = json.loads(ws.recv(timeout=5))
        return 200 if reply.get("code") == "bad-token" else 500


# ----- invitation links (issue 19 item 3) ----------------------------------------------------------------------------
def invite_body(ctx: Any) -> dict[str, str]:
    """An interpreter's invitation."""
    return {"role": "interpreter", "name": "Youssef"}


def doctor_only(ok: int) -> Any:
    """Only the consultation's doctor (on the care team) manages its invitations."""
    return lambda caller, assigned: 401 if caller == "anonymous" else (ok if caller == "doctor" and assigned else 403)


def random_id(ctx: Any) -> str:
    """An invitation that does not exist: the doctor gets 404, everyone else is refused before."""
    return str(uuid.uuid4())


def bad_secret(ctx: Any) -> dict[str, str]:
    """A secret nobody was given."""
    return {"secret": "not-a-real-invitation-secret-0123456789"}
