"""Authorization-matrix factories and policies for the prescription routes (issue 18).

The server under test is built without ``[ext.prescriptions]``, so it signs with the default key file; the factories
load the same file (:func:`helpers.default_keys`), so prescriptions they issue verify and can be dispensed. The seeded
doctor is the prescriber; the seeded pharmacist is linked to a pharmacy on first use.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from tests.teleconsult.api.helpers import SECRET
from tests.teleconsult.prescriptions.helpers import default_keys, issue, line_json, prepare

_READY: set[str] = set()


def _prepare(ctx: Any) -> None:
    if ctx.seeded.dsn not in _READY:
        prepare(ctx.seeded.dsn, ctx.seeded.users["doctor"], [ctx.seeded.users["pharmacist"]])
        _READY.add(ctx.seeded.dsn)


def prescription_id(ctx: Any) -> str:
    """A fresh prescription of the patient by the seeded doctor; its access code is kept on ``ctx``."""
    _prepare(ctx)
    rx_id, code = issue(ctx.seeded.dsn, default_keys(SECRET), ctx.patient_id, ctx.seeded.users["doctor"])
    ctx.__dict__["rx_code"] = code
    return str(rx_id)


def draft_body(ctx: Any) -> dict[str, Any]:
    """A valid draft (the seeded doctor gets a registration number first)."""
    _prepare(ctx)
    return {"lines": [line_json()]}


def lookup_body(ctx: Any) -> dict[str, str]:
    """Id + right code of a fresh prescription."""
    rx = prescription_id(ctx)
    return {"prescription_id": rx, "access_code": ctx.__dict__["rx_code"]}


def dispense_body(ctx: Any) -> dict[str, Any]:
    """The code of the prescription made by the ``prescription_id`` factory for this call."""
    return {"access_code": ctx.__dict__["rx_code"], "lines": [{"line_no": 1, "quantity": 1}]}


def dispense_id(ctx: Any) -> str:
    """``<dispense id>-1`` of a dispense recorded on a fresh prescription of the patient."""
    rx = prescription_id(ctx)
    with psycopg.connect(ctx.seeded.dsn, autocommit=True) as conn:
        row = conn.execute("select pharmacy_id from users where id = %s", (ctx.seeded.users["pharmacist"],)).fetchone()
        assert row is not None
        d = uuid.uuid4()
        conn.execute(
            "insert into dispenses (id, prescription_id, pharmacy_id, pharmacist_id, at)"
            " values (%s, %s, %s, %s, now())",
            (d, rx, row[0], ctx.seeded.users["pharmacist"]),
        )
        conn.execute(
            "insert into dispense_lines (dispense_id, line_no, quantity, dispensed_medicine, substituted)"
            " values (%s, 1, 1, 'Paracétamol 500 mg, comprimé', false)",
            (d,),
        )
    return f"{d}-1"


def pharmacist_user(ctx: Any) -> dict[str, str]:
    """A throwaway pharmacist account to link."""
    return {"user_id": str(ctx.throwaway_user("pharmacist"))}


def pharmacy_id(ctx: Any) -> str:
    """A throwaway pharmacy."""
    with psycopg.connect(ctx.seeded.dsn, autocommit=True) as conn:
        row = conn.execute("insert into pharmacies (name) values ('Pharmacie matrice') returning id").fetchone()
    assert row is not None
    return str(row[0])


def doctor_user(ctx: Any) -> str:
    """A throwaway doctor account."""
    return str(ctx.throwaway_user("doctor"))


def doctor_on_team(ok: int = 200) -> Any:
    """Doctors on the care team write, cancel and revise prescriptions."""
    return lambda caller, assigned: 401 if caller == "anonymous" else (ok if caller == "doctor" and assigned else 403)


def writer_on_team(caller: str, assigned: bool) -> int:
    """Doctors and nurses on the care team record allergies."""
    return 401 if caller == "anonymous" else (200 if caller in {"doctor", "nurse"} and assigned else 403)


def prescriber_or_patient(caller: str, assigned: bool) -> int:
    """The prescriber (seeded doctor, on the care team) and the patient themself see the access code and prints."""
    return 401 if caller == "anonymous" else (200 if caller in {"doctor", "patient"} and assigned else 403)


def pharmacist_only(ok: int = 200) -> Any:
    """A pharmacist linked to a pharmacy, whoever the patient is (the access code is the authorization)."""
    return lambda caller, assigned: 401 if caller == "anonymous" else (ok if caller == "pharmacist" else 403)


def no_query_after_setup(ctx: Any) -> dict[str, str]:
    """No query parameters; links the seeded pharmacist to a pharmacy first (for ``GET /pharmacy/me``)."""
    _prepare(ctx)
    return {}
