"""Consent per patient and purpose (law 09-08). The newest record for a (patient, purpose) is in force.

**No record means no consent** (issue 19): every reader asks :func:`has_consent` / :func:`require_consent`, or in SQL
``tbib_has_consent(patient_id, purpose)`` (migration 0100, false without a granting newest record) — never a
``coalesce(..., true)``. Set-wise readers (the ingest enrolment map, FHIR imports, the alert engine's profiles) embed
:data:`MONITORING_SQL`. Migration 0110 recorded a ``legacy`` remote-monitoring decision for the patients who were
already monitored under the old default (docs/security.md, "Consent").

What each purpose lets tbib do (:data:`PURPOSES`, shown to the patient in their space):

- ``remote_monitoring``: store the readings of the patient's devices (MQTT ingest, FHIR imports), run the alert rules
  on them (threshold, trend, NEWS2, no-data, gateway offline) and show them to the care team. Without it readings are
  refused (counted, dead-lettered with the reason, payload not kept) and no alert is raised.
- ``teleconsultation``: open video consultations with the care team's doctor and join them.
- ``data_sharing``: hand the record to other software through the FHIR API (an EHR, a lab, a hospital). The patient
  themself always reads their own record (right of access), consent or not.

A change of ``remote_monitoring`` notifies the alert engine (``profile:<patient>`` on ``tbib_alert_events``) so it
stops or resumes at once; the ingest worker reloads its enrolment map within ``enrolment_max_age_s``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import AsyncConnection, errors

from teleconsult.errors import ConsentRequiredError, NotFoundError
from teleconsult.security.models import ConsentPurpose

#: A boolean SQL expression: the remote-monitoring consent in force for the patient id ``{patient}`` (a column or a
#: placeholder), false when no decision is on file. ``MONITORING_SQL.format(patient="p.id")``.
MONITORING_SQL: Final = "tbib_has_consent({patient}, 'remote_monitoring')"

#: Where a decision came from: ``explicit`` (the patient or their care team recorded it) or ``legacy`` (carried over
#: by migration 0110 for a patient already monitored before consent was required explicitly).
BASES: Final = ("explicit", "legacy")

#: Purpose -> (what it allows, what refusing it means), in plain words (English; the dashboard translates by key).
PURPOSES: Final[dict[ConsentPurpose, tuple[str, str]]] = {
    ConsentPurpose.REMOTE_MONITORING: (
        "Your devices' readings are stored, checked for danger signs (alerts) and shown to your care team.",
        "Readings are refused and not kept; no alert is raised; your care team sees nothing new.",
    ),
    ConsentPurpose.TELECONSULTATION: (
        "Your doctor can open video consultations with you, and you can join them.",
        "No video consultation can be opened or joined.",
    ),
    ConsentPurpose.DATA_SHARING: (
        "Your care team may send your record to other health software (hospital, laboratory) through FHIR.",
        "Your record stays in tbib; you can still read and download it yourself.",
    ),
}

#: pg_notify channel and payload prefix the alert engine listens to (teleconsult.alerts.store.EVENTS_CHANNEL).
_ENGINE_CHANNEL: Final = "tbib_alert_events"


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
    basis: str = "explicit"
    """``explicit`` or ``legacy`` (:data:`BASES`)."""


_COLS: Final = "id, patient_id, purpose, granted, recorded_by, recorded_at, note, basis"


def _record(r: tuple[Any, ...]) -> ConsentRecord:
    return ConsentRecord(
        id=r[0],
        patient_id=r[1],
        purpose=ConsentPurpose(r[2]),
        granted=r[3],
        recorded_by=r[4],
        recorded_at=r[5],
        note=r[6],
        basis=r[7],
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
    """Record a grant or a withdrawal (always ``explicit``); a monitoring change tells the alert engine at commit."""
    try:
        async with conn.transaction():
            cur = await conn.execute(
                "insert into consents (patient_id, purpose, granted, recorded_by, recorded_at, note) "  # noqa: S608
                f"values (%s, %s, %s, %s, %s, %s) returning {_COLS}",
                (patient_id, purpose.value, granted, recorded_by, (now or datetime.now(UTC)), note),
            )
            row = await cur.fetchone()
            if purpose is ConsentPurpose.REMOTE_MONITORING:
                await conn.execute("select pg_notify(%s, %s)", (_ENGINE_CHANNEL, f"profile:{patient_id}"))
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
    return {p: rec is not None and rec.granted for p, rec in in_force(records).items()}


def in_force(records: list[ConsentRecord]) -> dict[ConsentPurpose, ConsentRecord | None]:
    """Purpose -> the decision in force (None: never decided, which means no consent), from a newest-first history."""
    state: dict[ConsentPurpose, ConsentRecord | None] = dict.fromkeys(ConsentPurpose, None)
    for rec in records:
        if state[rec.purpose] is None:
            state[rec.purpose] = rec
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
