"""Authorization-matrix factories and probes for the alert routes and sockets (issue 7)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

CLINICIANS = frozenset({"doctor", "nurse"})  # pharmacists are never on a care team (issue 18)


def alert_id(ctx: Any) -> str:
    """A fresh open alert of the patient (a unique rule name keeps the one-open-alert index happy)."""
    with psycopg.connect(ctx.seeded.dsn, autocommit=True) as conn:
        row = conn.execute(
            "insert into alerts (patient_id, rule, severity, state, raised_at, updated_at)"
            " values (%s, %s, 'medium', 'open', now(), now()) returning id",
            (ctx.patient_id, f"matrix-{uuid.uuid4().hex[:8]}"),
        ).fetchone()
    assert row is not None
    return str(row[0])


def clinician_policy(caller: str, assigned: bool) -> int:
    """Clinicians on the care team acknowledge/resolve alerts and set alert profiles; admins and patients may not."""
    if caller == "anonymous":
        return 401
    return 200 if assigned and caller in CLINICIANS else 403


def _probe(url: str, token: str | None) -> int:
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    sep = "&" if "?" in url else "?"
    try:
        with connect(url if token is None else f"{url}{sep}token={token}", open_timeout=10) as ws:
            if token is None:
                ws.send(json.dumps({"type": "auth", "token": "not-a-token"}))
            return 200 if json.loads(ws.recv(timeout=10)).get("type") == "hello" else 500
    except WebSocketException:
        return 401 if token is None else 403


def alerts_probe(ctx: Any, url: str, token: str | None, patient_id: uuid.UUID) -> int:
    """/ws/v1/alerts: 200 on hello (any account; frames are filtered by care team), 401 without credentials."""
    return _probe(url, token)


def vitals_probe(ctx: Any, url: str, token: str | None, patient_id: uuid.UUID) -> int:
    """/ws/v1/vitals?patient=: 200 on hello, 401 without credentials, 403 off the care team."""
    return _probe(f"{url}?patient={patient_id}", token)
