"""Seeding helpers of the dashboard tests: a doctor with a care team, another patient, readings, alerts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from teleconsult.store.rollups import rebuild_sync
from tests.teleconsult.api.helpers import PASSWORD, password_hash

#: pg_advisory_xact_lock key the alert store takes before writing events (teleconsult.alerts.store).
EVENT_LOCK = 0x7462_6962_6165_7674

__all__ = ["PASSWORD", "Cast", "insert_readings", "raise_alert", "seed_cast"]


@dataclass
class Cast:
    dsn: str
    doctor: str
    doctor_id: uuid.UUID
    other_doctor: str
    mine: list[uuid.UUID]
    others: list[uuid.UUID]
    names: dict[uuid.UUID, str] = field(default_factory=dict)


def _user(conn: psycopg.Connection, username: str, role: str = "doctor", name: str | None = None) -> uuid.UUID:
    row = conn.execute(
        "insert into users (username, display_name, role, password_hash) values (%s, %s, %s, %s) returning id",
        (username, name or username, role, password_hash()),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def seed_cast(dsn: str, *, mine: int = 3, others: int = 1, prefix: str = "d") -> Cast:
    """A doctor assigned to ``mine`` patients (each with a gateway), and ``others`` patients of another doctor."""
    tag = uuid.uuid4().hex[:6]
    with psycopg.connect(dsn, autocommit=True) as conn:
        doctor = f"{prefix}-doc-{tag}"
        other = f"{prefix}-other-{tag}"
        doc_id = _user(conn, doctor, name="Dr Amina Benali")
        other_id = _user(conn, other)
        cast = Cast(dsn, doctor, doc_id, other, [], [])
        for i in range(mine + others):
            name = f"{'Patient' if i < mine else 'Autre'} {tag} {i}"
            row = conn.execute("insert into patients (display_name) values (%s) returning id", (name,)).fetchone()
            assert row is not None
            pid = uuid.UUID(str(row[0]))
            cast.names[pid] = name
            conn.execute("insert into gateways (id, patient_id) values (%s, %s)", (f"gw-{tag}-{i}", pid))
            owner = doc_id if i < mine else other_id
            conn.execute(
                "insert into care_team (clinician_id, patient_id, valid_from)"
                " values (%s, %s, now() - interval '1 day')",
                (owner, pid),
            )
            (cast.mine if i < mine else cast.others).append(pid)
    return cast


def insert_readings(
    dsn: str, patient_id: uuid.UUID, metric: str, unit: str, values: Sequence[float], *, every: timedelta, end: datetime
) -> None:
    """Readings ending at ``end`` (the last value), ``every`` apart; updates latest_readings like ingest does."""
    rows = []
    for i, v in enumerate(values):
        at = end - every * (len(values) - 1 - i)
        rows.append((patient_id, metric, v, unit, at, uuid.uuid4()))
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor().copy(
            "copy readings (patient_id, metric, value, unit, measured_at, reading_id) from stdin"
        ) as cp:
            for r in rows:
                cp.write_row(r)
        rebuild_sync(conn, start=rows[0][4], end=end + timedelta(seconds=1), patient_id=patient_id)  # as ingest does
        last = rows[-1]
        conn.execute(
            "insert into latest_readings (patient_id, metric, value, unit, measured_at, reading_id)"
            " values (%s, %s, %s, %s, %s, %s) on conflict (patient_id, metric) do update set value = excluded.value,"
            " unit = excluded.unit, measured_at = excluded.measured_at, reading_id = excluded.reading_id"
            " where latest_readings.measured_at <= excluded.measured_at",
            last,
        )


def raise_alert(dsn: str, patient_id: uuid.UUID, rule: str = "spo2", severity: str = "high") -> int:
    """An open alert with its 'raised' event (as the alert store writes them), NOTIFY included."""
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (EVENT_LOCK,))  # the alert store's ordering rule
        row = conn.execute(
            "with a as (insert into alerts (patient_id, rule, severity, state, raised_at, updated_at, details)"
            " values (%s, %s, %s, 'open', %s, %s, '{}') returning *)"
            " insert into alert_events (type, alert_id, patient_id, payload)"
            " select 'raised', a.id, a.patient_id, to_jsonb(a) from a returning id, alert_id",
            (patient_id, rule, severity, now, now),
        ).fetchone()
        assert row is not None
        conn.execute("select pg_notify('tbib_alert_events', %s)", (str(row[0]),))
    return int(row[1])
