"""The consultation record in PostgreSQL (migration 0300): consultations and the events of their signaling room.

Subjects of join tokens are user ids (doctor, patient, interpreter) or ``gateway-of-<patient id>`` for the agent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection

from teleconsult.errors import NotFoundError
from teleconsult.signaling.rooms import Record, RecordKind

_COLS: Final = "id, patient_id, doctor_id, created_by, created_at, scheduled_for, started_at, ended_at, reason"


@dataclass(frozen=True, slots=True)
class Consultation:
    """One teleconsultation."""

    id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID
    created_by: uuid.UUID | None
    created_at: datetime
    scheduled_for: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    reason: str


def _row(r: tuple[Any, ...]) -> Consultation:
    return Consultation(*r)


async def create(
    conn: AsyncConnection[Any],
    *,
    patient_id: uuid.UUID,
    doctor_id: uuid.UUID,
    created_by: uuid.UUID | None,
    scheduled_for: datetime | None = None,
    reason: str = "",
) -> Consultation:
    """A new consultation for ``patient_id`` led by ``doctor_id``."""
    cur = await conn.execute(
        f"insert into consultations (patient_id, doctor_id, created_by, scheduled_for, reason) "  # noqa: S608
        f"values (%s, %s, %s, %s, %s) returning {_COLS}",
        (patient_id, doctor_id, created_by, scheduled_for, reason),
    )
    row = await cur.fetchone()
    assert row is not None
    return _row(row)


async def get(conn: AsyncConnection[Any], consultation_id: uuid.UUID, patient_id: uuid.UUID) -> Consultation:
    """The consultation, which must belong to ``patient_id`` (:class:`NotFoundError` otherwise)."""
    cur = await conn.execute(
        f"select {_COLS} from consultations where id = %s and patient_id = %s",  # noqa: S608
        (consultation_id, patient_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("consultation", consultation_id)
    return _row(row)


async def list_for_patient(conn: AsyncConnection[Any], patient_id: uuid.UUID, limit: int = 50) -> list[Consultation]:
    """Newest first."""
    cur = await conn.execute(
        f"select {_COLS} from consultations where patient_id = %s order by created_at desc limit %s",  # noqa: S608
        (patient_id, limit),
    )
    return [_row(r) for r in await cur.fetchall()]


async def store_event(conn: AsyncConnection[Any], record: Record) -> bool:
    """Append a room event; ``started``/``ended`` also stamp the consultation. False for an unknown consultation."""
    try:
        cid = uuid.UUID(record.consultation_id)
    except ValueError:
        return False
    cur = await conn.execute("select 1 from consultations where id = %s", (cid,))
    if await cur.fetchone() is None:
        return False
    await conn.execute(
        "insert into consultation_events (consultation_id, kind, at, seat, role, subject, by_subject, reason) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            cid,
            record.kind.value,
            record.at,
            record.seat.value if record.seat else None,
            record.role.value if record.role else None,
            record.subject,
            record.by,
            record.reason,
        ),
    )
    if record.kind is RecordKind.STARTED:
        await conn.execute(
            "update consultations set started_at = coalesce(started_at, %s) where id = %s", (record.at, cid)
        )
    elif record.kind is RecordKind.ENDED:
        await conn.execute("update consultations set ended_at = %s where id = %s", (record.at, cid))
    return True
