"""Alert persistence (tables of migration 0200): lifecycle, event log for replay, engine restore.

Contract
- ``alerts``: one row per alert, state ``open`` → ``acknowledged`` → ``resolved``; at most one unresolved alert per
  (patient, rule). An engine "cleared" event resolves the alert with ``resolution = 'cleared'`` and no ``resolved_by``;
  a clinician's resolve sets ``resolution = 'resolved'``.
- ``alert_events``: every change appends one event whose ``payload`` is the alert row as JSON after the change.
  Event ids are visible in increasing order: each writing transaction takes :data:`EVENT_LOCK`
  (``pg_advisory_xact_lock``) before its first insert, so "events with id > N" never misses a late commit.
  Each event is announced with ``NOTIFY tbib_alert_events`` (delivered at commit, to every node, in commit order =
  id order): the payload is the websocket frame itself (JSON) when it is under 7000 bytes, else the event id.
- Every function takes an open ``psycopg.AsyncConnection`` and runs its own transaction block.
- Engine events are idempotent (a transaction retried after a lost connection or a PostgreSQL failover, whose first
  attempt may have committed, :mod:`teleconsult.store.failover`): storing the same event (same kind, key, time and
  details) again changes nothing and logs no second event -- a replayed ``raised`` finds an alert of that key raised
  at that time (open or not), ``updated`` its ``updated_at``/severity/details, ``escalated`` its ``escalated_at``;
  ``cleared`` finds the alert resolved; and no event applies to an alert raised after it. A clinician's
  acknowledge/resolve retried after it committed gets :class:`AlertStateError` (state reached, no second event).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from psycopg import AsyncConnection

from teleconsult.alerts.errors import AlertNotFoundError, AlertStateError
from teleconsult.alerts.model import AlertEvent, AlertKey, EventKind, OpenAlert, Severity
from teleconsult.alerts.rules import PatientProfile
from teleconsult.security.consent import MONITORING_SQL

#: pg_advisory_xact_lock key serializing alert event writers (ASCII "tbibaevt").
EVENT_LOCK: Final = 0x7462_6962_6165_7674
#: NOTIFY channels.
EVENTS_CHANNEL: Final = "tbib_alert_events"
READINGS_CHANNEL: Final = "tbib_readings"

Conn = AsyncConnection[Any]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of ``alert_events``."""

    id: int
    type: str
    alert_id: int
    patient_id: uuid.UUID
    payload: dict[str, Any]
    created_at: datetime

    def message(self) -> dict[str, Any]:
        """The websocket frame for this event."""
        return {
            "type": "alert",
            "id": self.id,
            "event": self.type,
            "at": self.created_at.isoformat(),
            "alert": self.payload,
        }


_EVENT_COLS: Final = "id, type, alert_id, patient_id, payload, created_at"


def _event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(int(row[0]), str(row[1]), int(row[2]), row[3], dict(row[4]), row[5])


def _log(cte: str) -> str:
    """``cte`` (an UPDATE/INSERT on alerts ``returning *``) followed by the insert of its event."""
    return (
        f"with a as ({cte}) insert into alert_events (type, alert_id, patient_id, payload) "  # noqa: S608
        f"select %(type)s, a.id, a.patient_id, to_jsonb(a) from a returning {_EVENT_COLS}"
    )


_RAISE: Final = _log(
    "insert into alerts (patient_id, rule, severity, state, raised_at, updated_at, details) "
    "select %(patient)s::uuid, %(rule)s::text, %(severity)s::text, 'open', %(at)s::timestamptz, %(at)s::timestamptz,"
    " %(details)s::jsonb where not exists (select 1 from alerts where patient_id = %(patient)s and rule = %(rule)s"
    " and raised_at = %(at)s) "
    "on conflict (patient_id, rule) where state <> 'resolved' do update set severity = excluded.severity, "
    "updated_at = excluded.updated_at, details = excluded.details "
    "where alerts.raised_at <> excluded.raised_at returning *"
)
_UPDATE: Final = _log(
    "update alerts set severity = %(severity)s, updated_at = %(at)s, details = %(details)s "
    "where patient_id = %(patient)s and rule = %(rule)s and state <> 'resolved' "
    "and raised_at <= %(at)s"
    " and not (updated_at = %(at)s and severity = %(severity)s and details = %(details)s::jsonb) returning *"
)
_CLEAR: Final = _log(
    "update alerts set state = 'resolved', resolution = 'cleared', resolved_at = %(at)s, updated_at = %(at)s, "
    "details = details || jsonb_build_object('cleared', %(details)s::jsonb) "
    "where patient_id = %(patient)s and rule = %(rule)s and state <> 'resolved' and raised_at <= %(at)s returning *"
)
# Escalate to the second doctor or nurse of the care team (by assignment order), when there is one.
_ESCALATE: Final = _log(
    "update alerts set escalated_at = %(at)s, updated_at = %(at)s, escalated_to = ("
    " select c.clinician_id from care_team c join users u on u.id = c.clinician_id"
    " where c.patient_id = %(patient)s and not u.disabled and u.role in ('doctor', 'nurse')"
    " and c.valid_from <= %(at)s and (c.valid_to is null or c.valid_to > %(at)s)"
    " order by c.valid_from, c.id offset 1 limit 1) "
    "where patient_id = %(patient)s and rule = %(rule)s and state <> 'resolved' "
    "and raised_at <= %(at)s and (escalated_at is null or escalated_at < %(at)s) returning *"
)
_SQL: Final[dict[EventKind, str]] = {
    EventKind.RAISED: _RAISE,
    EventKind.UPDATED: _UPDATE,
    EventKind.CLEARED: _CLEAR,
    EventKind.ESCALATED: _ESCALATE,
}


async def _lock_and_notify_prefix(conn: Conn) -> None:
    await conn.execute("select pg_advisory_xact_lock(%s)", (EVENT_LOCK,))


#: NOTIFY payloads must stay below 8000 bytes; larger events are announced by id only.
MAX_NOTIFY_BYTES: Final = 7000


def notify_payload(event: StoredEvent) -> str:
    """The frame itself when small enough (listeners skip a query), else the event id."""
    text = json.dumps(event.message(), separators=(",", ":"))
    return text if len(text.encode()) <= MAX_NOTIFY_BYTES else str(event.id)


async def _notify(conn: Conn, events: Sequence[StoredEvent]) -> None:
    """One statement for all the events (one round trip); notifications are queued in array order."""
    if events:
        await conn.execute(
            "select pg_notify(%s, p) from unnest(%s::text[]) as p",
            (EVENTS_CHANNEL, [notify_payload(ev) for ev in events]),
        )


async def record_engine_events(conn: Conn, events: Iterable[AlertEvent]) -> list[StoredEvent]:
    """Persist engine events in one transaction; returns the stored events (an event on no open alert is skipped).

    Pipelined: ``BEGIN``, the lock and every event's statement go in one round trip, the ``NOTIFY`` and ``COMMIT``
    in a second, whatever the number of events (it was 4 + one per event: each a wait for the server, and under CPU
    contention each a scheduling delay of both processes, on the alert's path).
    """
    stored: list[StoredEvent] = []
    async with conn.pipeline(), conn.transaction():
        await _lock_and_notify_prefix(conn)
        cursors = []
        for ev in events:
            params = {
                "type": ev.kind.value,
                "patient": uuid.UUID(ev.key.patient_id),
                "rule": ev.key.rule,
                "severity": ev.severity.value,
                "at": ev.at,
                "details": json.dumps(dict(ev.details)),
            }
            cursors.append(await conn.execute(_SQL[ev.kind], params))
        for cur in cursors:  # the first fetch sends the queued statements and waits once for all their results
            row = await cur.fetchone()
            if row is not None:
                stored.append(_event(row))
        await _notify(conn, stored)
    return stored


async def _transition(
    conn: Conn, alert_id: int, *, kind: str, user_id: uuid.UUID, note: str, now: datetime
) -> StoredEvent:
    async with conn.transaction():
        await _lock_and_notify_prefix(conn)
        cur = await conn.execute("select state from alerts where id = %s for update", (alert_id,))
        row = await cur.fetchone()
        if row is None:
            raise AlertNotFoundError(alert_id)
        state = str(row[0])
        if state == "resolved" or (kind == "acknowledged" and state == "acknowledged"):
            raise AlertStateError(f"alert {alert_id} is already {state}", alert_id=alert_id, state=state)
        if kind == "acknowledged":
            cte = (
                "update alerts set state = 'acknowledged', acked_by = %(user)s, acked_at = %(at)s, updated_at = %(at)s,"
                " notes = case when %(note)s = '' then notes else concat_ws(E'\\n', nullif(notes, ''), %(note)s) end"
                " where id = %(id)s returning *"
            )
        else:
            cte = (
                "update alerts set state = 'resolved', resolution = 'resolved', resolved_by = %(user)s,"
                " resolved_at = %(at)s, updated_at = %(at)s,"
                " notes = case when %(note)s = '' then notes else concat_ws(E'\\n', nullif(notes, ''), %(note)s) end"
                " where id = %(id)s returning *"
            )
        cur = await conn.execute(_log(cte), {"type": kind, "user": user_id, "at": now, "note": note, "id": alert_id})
        ev_row = await cur.fetchone()
        assert ev_row is not None
        event = _event(ev_row)
        await _notify(conn, [event])
    return event


async def acknowledge(conn: Conn, alert_id: int, *, user_id: uuid.UUID, note: str, now: datetime) -> StoredEvent:
    """open → acknowledged (:class:`AlertStateError` when already acknowledged or resolved)."""
    return await _transition(conn, alert_id, kind="acknowledged", user_id=user_id, note=note, now=now)


async def resolve(conn: Conn, alert_id: int, *, user_id: uuid.UUID, note: str, now: datetime) -> StoredEvent:
    """open/acknowledged → resolved by a clinician."""
    return await _transition(conn, alert_id, kind="resolved", user_id=user_id, note=note, now=now)


async def get_alert(conn: Conn, alert_id: int) -> dict[str, Any]:
    """One alert as JSON (:class:`AlertNotFoundError`)."""
    cur = await conn.execute("select to_jsonb(a) from alerts a where id = %s", (alert_id,))
    row = await cur.fetchone()
    if row is None:
        raise AlertNotFoundError(alert_id)
    return dict(row[0])


async def alert_patient(conn: Conn, alert_id: int) -> uuid.UUID:
    """The patient of an alert (for the care-team check before any other access)."""
    cur = await conn.execute("select patient_id from alerts where id = %s", (alert_id,))
    row = await cur.fetchone()
    if row is None:
        raise AlertNotFoundError(alert_id)
    patient: uuid.UUID = row[0]
    return patient


async def list_alerts(
    conn: Conn, *, patient_ids: Sequence[uuid.UUID], states: Sequence[str], limit: int = 200
) -> list[dict[str, Any]]:
    """Alerts of these patients in these states, newest first."""
    cur = await conn.execute(
        "select to_jsonb(a) from alerts a where patient_id = any(%s) and state = any(%s)"
        " order by raised_at desc, id desc limit %s",
        (list(patient_ids), list(states), limit),
    )
    return [dict(r[0]) for r in await cur.fetchall()]


async def events_since(
    conn: Conn, last_id: int, *, patient_ids: Sequence[uuid.UUID] | None = None, limit: int = 10_000
) -> list[StoredEvent]:
    """Events with id > ``last_id`` (of these patients when given), in id order."""
    if patient_ids is None:
        cur = await conn.execute(
            f"select {_EVENT_COLS} from alert_events where id > %s order by id limit %s",  # noqa: S608
            (last_id, limit),
        )
    else:
        cur = await conn.execute(
            f"select {_EVENT_COLS} from alert_events where id > %s and patient_id = any(%s)"  # noqa: S608
            " order by id limit %s",
            (last_id, list(patient_ids), limit),
        )
    return [_event(r) for r in await cur.fetchall()]


async def last_event_id(conn: Conn) -> int:
    """The newest event id (0 when none)."""
    cur = await conn.execute("select coalesce(max(id), 0) from alert_events")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def open_alerts(conn: Conn) -> list[OpenAlert]:
    """Every unresolved alert, for :meth:`Engine.restore`."""
    cur = await conn.execute(
        "select patient_id, rule, severity, raised_at, state = 'acknowledged', escalated_at is not null, details"
        " from alerts where state <> 'resolved' order by id"
    )
    return [
        OpenAlert(AlertKey(str(r[0]), str(r[1])), Severity(r[2]), r[3], bool(r[4]), bool(r[5]), dict(r[6]))
        for r in await cur.fetchall()
    ]


def profile_from_json(
    patient_id: str, data: dict[str, Any], gateway_id: str | None, *, monitoring: bool = True
) -> PatientProfile:
    """A :class:`PatientProfile` from the ``alert_profiles.config`` JSON (unknown keys are ignored)."""
    intervals = {str(k): timedelta(seconds=float(v)) for k, v in dict(data.get("expected_intervals_s", {})).items()}
    oxygen = data.get("supplemental_oxygen")
    return PatientProfile(
        patient_id,
        spo2_scale=int(data.get("spo2_scale", 1)),
        supplemental_oxygen=None if oxygen is None else bool(oxygen),
        heart_failure=bool(data.get("heart_failure", False)),
        expected_intervals=intervals,
        gateway_id=gateway_id,
        monitoring=monitoring,
    )


async def profiles(conn: Conn) -> list[PatientProfile]:
    """Every patient's profile (``alert_profiles`` joined with the patient's gateway and monitoring consent)."""
    cur = await conn.execute(
        "select p.id, coalesce(ap.config, '{}'::jsonb),"  # noqa: S608 - MONITORING_SQL is a constant
        " (select g.id from gateways g where g.patient_id = p.id order by g.created_at limit 1),"
        f" {MONITORING_SQL.format(patient='p.id')}"
        " from patients p left join alert_profiles ap on ap.patient_id = p.id"
    )
    return [profile_from_json(str(r[0]), dict(r[1]), r[2], monitoring=bool(r[3])) for r in await cur.fetchall()]


async def set_profile(conn: Conn, patient_id: uuid.UUID, config: dict[str, Any]) -> None:
    """Store a patient's alert configuration (read by the engine leader at start and on ``profile`` events)."""
    async with conn.transaction():
        await conn.execute(
            "insert into alert_profiles (patient_id, config) values (%s, %s)"
            " on conflict (patient_id) do update set config = excluded.config, updated_at = now()",
            (patient_id, json.dumps(config)),
        )
        await conn.execute("select pg_notify(%s, %s)", (EVENTS_CHANNEL, f"profile:{patient_id}"))
