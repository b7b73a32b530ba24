"""Care-team authorization: a clinician (or an admin) sees a patient only while assigned; a patient sees themself.

List queries enforce the same rule in SQL with the functions created by migration 0100:
``tbib_accessible_patients(user_id, at default now()) returns setof uuid`` and
``tbib_can_access(user_id, patient_id, at default now()) returns boolean``. Use :data:`ACCESSIBLE_PATIENTS_SQL`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import AsyncConnection, errors

from teleconsult.errors import ConflictError, NotFoundError
from teleconsult.security.models import Role, User

#: Drop into a WHERE clause: ``... where r.patient_id in (<this>)`` with the parameter ``%(user_id)s``.
ACCESSIBLE_PATIENTS_SQL: Final = "select tbib_accessible_patients(%(user_id)s)"


@dataclass(frozen=True, slots=True)
class Assignment:
    """One care-team membership, valid on ``[valid_from, valid_to)``."""

    id: uuid.UUID
    clinician_id: uuid.UUID
    patient_id: uuid.UUID
    valid_from: datetime
    valid_to: datetime | None
    created_by: uuid.UUID | None


_COLS: Final = "id, clinician_id, patient_id, valid_from, valid_to, created_by"


def _assignment(r: tuple[Any, ...]) -> Assignment:
    return Assignment(id=r[0], clinician_id=r[1], patient_id=r[2], valid_from=r[3], valid_to=r[4], created_by=r[5])


async def access_via(
    conn: AsyncConnection[Any], user: User, patient_id: uuid.UUID, at: datetime | None = None
) -> str | None:
    """``"self"``, ``"care_team"`` or None (no access) for ``user`` reading ``patient_id`` at time ``at``."""
    if user.role is Role.PATIENT:
        return "self" if user.patient_id == patient_id else None
    cur = await conn.execute(
        "select tbib_can_access(%s, %s, %s)", (user.id, patient_id, (at or datetime.now(UTC)).astimezone(UTC))
    )
    row = await cur.fetchone()
    return "care_team" if row is not None and row[0] else None


async def assign(
    conn: AsyncConnection[Any],
    *,
    clinician_id: uuid.UUID,
    patient_id: uuid.UUID,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    created_by: uuid.UUID | None = None,
) -> Assignment:
    """Add a care-team membership; the clinician must be an enabled account, neither patient nor pharmacist."""
    cur = await conn.execute("select role, disabled from users where id = %s", (clinician_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("user", clinician_id)
    if row[0] == Role.PATIENT.value:
        raise ConflictError("a patient account cannot be on a care team")
    if row[0] == Role.PHARMACIST.value:
        raise ConflictError("a pharmacist is never on a care team (prescriptions reach them by access code)")
    start = (valid_from or datetime.now(UTC)).astimezone(UTC)
    if valid_to is not None and valid_to <= start:
        raise ConflictError("valid_to must be after valid_from")
    try:
        async with conn.transaction():
            cur = await conn.execute(
                "insert into care_team (clinician_id, patient_id, valid_from, valid_to, created_by) "  # noqa: S608
                f"values (%s, %s, %s, %s, %s) returning {_COLS}",
                (clinician_id, patient_id, start, valid_to, created_by),
            )
            created = await cur.fetchone()
    except errors.ForeignKeyViolation as exc:
        raise NotFoundError("patient", patient_id) from exc
    assert created is not None
    return _assignment(created)


async def end_assignment(
    conn: AsyncConnection[Any], assignment_id: uuid.UUID, at: datetime | None = None
) -> Assignment:
    """Close an assignment at ``at`` (now by default); history is kept."""
    end = (at or datetime.now(UTC)).astimezone(UTC)
    cur = await conn.execute(
        f"update care_team set valid_to = greatest(valid_from, %s) "  # noqa: S608
        f"where id = %s and (valid_to is null or valid_to > %s) returning {_COLS}",
        (end, assignment_id, end),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("active care-team assignment", assignment_id)
    return _assignment(row)


async def list_assignments(
    conn: AsyncConnection[Any],
    *,
    patient_id: uuid.UUID | None = None,
    clinician_id: uuid.UUID | None = None,
    active_at: datetime | None = None,
) -> list[Assignment]:
    """Assignments filtered by patient, clinician and/or activity at a time."""
    cur = await conn.execute(
        f"select {_COLS} from care_team where (%(p)s::uuid is null or patient_id = %(p)s) "  # noqa: S608
        "and (%(c)s::uuid is null or clinician_id = %(c)s) "
        "and (%(t)s::timestamptz is null or (valid_from <= %(t)s and (valid_to is null or valid_to > %(t)s))) "
        "order by valid_from, id",
        {"p": patient_id, "c": clinician_id, "t": active_at},
    )
    return [_assignment(r) for r in await cur.fetchall()]


async def accessible_patient_ids(conn: AsyncConnection[Any], user: User) -> list[uuid.UUID]:
    """The patients ``user`` may see now (SQL-side rule)."""
    cur = await conn.execute("select * from tbib_accessible_patients(%s) as p order by 1", (user.id,))
    return [r[0] for r in await cur.fetchall()]
