"""Helpers for prescription tests (also used by the authorization matrix): issue a prescription straight through the
service, link a pharmacist to a pharmacy, set a doctor's registration number."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from teleconsult.prescriptions import service
from teleconsult.prescriptions.formulary import load
from teleconsult.prescriptions.model import LineDraft
from teleconsult.prescriptions.signing import Signer, default_key_path

PARACETAMOL = "paracetamol-500mg-comprime"
AMOXICILLINE = "amoxicilline-500mg-gelule"


def line(formulary_id: str | None = PARACETAMOL, **kw: Any) -> LineDraft:
    values: dict[str, Any] = {
        "formulary_id": formulary_id, "medicine": None, "dose": 1.0, "dose_unit": "comprimé", "times_per_day": 3,
        "duration_days": 5, "quantity": 2, "quantity_unit": "boîte", "repeats": 0, "instructions": "si douleur",
        "substitution_allowed": True,
    }  # fmt: skip
    values.update(kw)
    return LineDraft(**values)


def line_json(formulary_id: str | None = PARACETAMOL, **kw: Any) -> dict[str, Any]:
    d = line(formulary_id, **kw)
    return {k: getattr(d, k) for k in d.__dataclass_fields__}


def prepare(dsn: str, doctor_id: uuid.UUID, pharmacist_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Registration number for the doctor; one pharmacy per pharmacist (created once per account)."""
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("update users set registration_number = 'INPE 112233445' where id = %s", (doctor_id,))
        for i, pid in enumerate(pharmacist_ids):
            row = conn.execute("select pharmacy_id from users where id = %s", (pid,)).fetchone()
            if row is None or row[0] is None:
                ph = conn.execute(
                    "insert into pharmacies (name, city) values (%s, 'Rabat') returning id", (f"Pharmacie {i + 1}",)
                ).fetchone()
                assert ph is not None
                conn.execute("update users set pharmacy_id = %s where id = %s", (ph[0], pid))
                out.append(ph[0])
            else:
                out.append(row[0])
    return out


def default_keys(secret: str) -> service.Keys:
    """The keys a server built without ``[ext.prescriptions]`` uses."""
    return keys_at(default_key_path(), secret)


def keys_at(path: Path, secret: str) -> service.Keys:
    return service.Keys(signer=Signer.load_or_create(path), secret=secret)


def issue(
    dsn: str,
    keys: service.Keys,
    patient_id: uuid.UUID,
    doctor_id: uuid.UUID,
    lines: list[LineDraft] | None = None,
    *,
    now: datetime | None = None,
    validity_days: int | None = None,
) -> tuple[uuid.UUID, str]:
    """Issue through the service (as the route does); returns (id, access code)."""

    async def run() -> tuple[uuid.UUID, str]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
            rx, code = await service.issue(
                conn, keys, load(), patient_id=patient_id, prescriber_id=doctor_id,
                draft=service.Draft(lines=lines or [line()], validity_days=validity_days,
                                    acknowledge_warnings=True),
                now=now or datetime.now(UTC),
            )  # fmt: skip
        return rx.id, code

    return asyncio.run(run())
