"""Consent per patient and purpose (law 09-08). The newest record for a (patient, purpose) is in force.

Ingest and consultations call :func:`has_consent` / :func:`require_consent`; SQL code can use
``tbib_has_consent(patient_id, purpose)`` (migration 0100).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import AsyncConnection, errors

from teleconsult.errors import ConsentRequiredError, NotFoundError
from teleconsult.security.models import ConsentPurpose


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """One recorded decision."""

    id: int
    patient_id: uuid.UUID
    purpose: ConsentPurpose
    granted: bool
    recorded_by: uuid.UUID | None
    recorded_at: datetime
    note: str


_COLS: Final = "id, patient_id, purpose, granted, recorded_by, recorded_at, note"


def _record(r: tuple[Any, ...]) -> ConsentRecord:
    return ConsentRecord(
        id=r[0],
        patient_id=r[1],
        purpose=ConsentPurpose(r[2]),
        granted=r[3],
        recorded_by=r[4],
        recorded_at=r[5],
        note=r[6],
    )


async def record(
    conn: AsyncConnection[Any],
    *,
    patient_id: uuid.UUID,
    purpose: ConsentPurpose,
    granted: bool,
    recorded_by: uuid.UUID | None,
    note: str = "",
    now: datetime | None = None,
) -> ConsentRecord:
    """Record a grant or a withdrawal."""
    try:
        async with conn.transaction():
            cur = await conn.execute(
                "insert into consents (patient_id, purpose, granted, recorded_by, recorded_at, note) "  # noqa: S608
                f"values (%s, %s, %s, %s, %s, %s) returning {_COLS}",
                (patient_id, purpose.value, granted, recorded_by, (now or datetime.now(UTC)), note),
            )
            row = await cur.fetchone()
    except errors.ForeignKeyViolation as exc:
        raise NotFoundError("patient", patient_id) from exc
    assert row is not None
    return _record(row)


async def history(conn: AsyncConnection[Any], patient_id: uuid.UUID) -> list[ConsentRecord]:
    """Every decision for a patient, newest first."""
    cur = await conn.execute(
        f"select {_COLS} from consents where patient_id = %s order by recorded_at desc, id desc",  # noqa: S608
        (patient_id,),
    )
    return [_record(r) for r in await cur.fetchall()]


def current(records: list[ConsentRecord]) -> dict[ConsentPurpose, bool]:
    """Purpose -> granted now, from a newest-first history (purposes never recorded are False)."""
    state = dict.fromkeys(ConsentPurpose, False)
    seen: set[ConsentPurpose] = set()
    for rec in records:
        if rec.purpose not in seen:
            seen.add(rec.purpose)
            state[rec.purpose] = rec.granted
    return state


async def has_consent(conn: AsyncConnection[Any], patient_id: uuid.UUID, purpose: ConsentPurpose) -> bool:
    """True when the newest record for this purpose grants it."""
    cur = await conn.execute("select tbib_has_consent(%s, %s)", (patient_id, purpose.value))
    row = await cur.fetchone()
    return bool(row and row[0])


async def require_consent(conn: AsyncConnection[Any], patient_id: uuid.UUID, purpose: ConsentPurpose) -> None:
    """:class:`ConsentRequiredError` (HTTP 403) unless consent is in force."""
    if not await has_consent(conn, patient_id, purpose):
        raise ConsentRequiredError(patient_id, purpose.value)
