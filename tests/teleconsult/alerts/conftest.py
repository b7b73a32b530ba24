"""Fixtures of the alerts tests: an upgraded database, patients, clinicians with tokens."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from teleconsult.store.migrate import upgrade


@pytest.fixture(scope="module")
def alerts_dsn(db_dsn: str) -> str:
    """A database of the module with every migration applied (both storage flavours)."""
    upgrade(db_dsn)
    return db_dsn


@pytest.fixture(scope="module")
def alerts_tsdb_dsn(tsdb_dsn: str) -> str:
    upgrade(tsdb_dsn)
    return tsdb_dsn


def new_patient(
    dsn: str, name: str = "Test Patient", gateway: str | None = None, *, monitoring: bool = True
) -> uuid.UUID:
    """A patient (with a gateway), consenting to remote monitoring unless ``monitoring`` is False."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("insert into patients (display_name) values (%s) returning id", (name,)).fetchone()
        assert row is not None
        if monitoring:
            conn.execute(
                "insert into consents (patient_id, purpose, granted) values (%s, 'remote_monitoring', true)", (row[0],)
            )
        if gateway is not None:
            conn.execute("insert into gateways (id, patient_id) values (%s, %s)", (gateway, row[0]))
        return row[0]  # type: ignore[no-any-return]


_order = itertools.count()


@dataclass(frozen=True)
class Clinician:
    id: uuid.UUID
    username: str


def new_clinician(dsn: str, patients: list[uuid.UUID], role: str = "doctor") -> Clinician:
    name = f"dr{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "insert into users (username, role, password_hash) values (%s, %s, 'x') returning id", (name, role)
        ).fetchone()
        assert row is not None
        for p in patients:  # assignment order = creation order (the first is the primary clinician)
            conn.execute(
                "insert into care_team (clinician_id, patient_id, valid_from) values (%s, %s, %s)",
                (row[0], p, datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=next(_order))),
            )
        return Clinician(row[0], name)
