"""Fixtures: a migrated database (both flavours) with the API test cast, enrolled devices, readings, an open alert, and
a live uvicorn serving the whole app (the FHIR extension is discovered like in production)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from teleconsult.api.app import create_app
from teleconsult.store.migrate import upgrade
from tests.teleconsult.api.helpers import LiveServer, Seeded, login, make_settings, seed

CIN = "https://tbib.ma/fhir/sid/cin"
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
N_SPO2 = 250


@dataclass
class Env:
    seeded: Seeded
    url: str
    tokens: dict[str, str]
    device1: uuid.UUID
    device2: uuid.UUID
    bp_group: uuid.UUID
    spo2_ids: list[uuid.UUID] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        return self.seeded.dsn

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def sql(self, query: str, args: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query, args)
            return cur.fetchall() if cur.description else []


def insert_readings(dsn: str, rows: list[tuple]) -> None:
    """rows: (patient, device, metric, value, unit, measured_at, reading_id, group_id, flags json or None)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.cursor().executemany(
            "insert into readings (patient_id, device_id, metric, value, unit, measured_at, received_at, reading_id,"
            " group_id, flags) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(p, d, m, v, u, at, at + timedelta(seconds=1), rid, g, f) for p, d, m, v, u, at, rid, g, f in rows],
        )


@pytest.fixture(scope="module")
def fhir_env(db_dsn: str) -> Iterator[Env]:
    upgrade(db_dsn)
    s = seed(db_dsn, prefix="f")
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("insert into gateways (id, patient_id) values ('gw-f1', %s), ('gw-f2', %s)", (s.p1, s.p2))
        d1 = conn.execute(
            "insert into devices (gateway_id, address, model, serial, kind) values"
            " ('gw-f1', 'AA:BB:CC:00:00:01', 'Oxi-1', 'SN-OX-1', 'pulse_oximeter') returning id"
        ).fetchone()[0]
        d2 = conn.execute(
            "insert into devices (gateway_id, address, model, serial, kind) values"
            " ('gw-f2', 'AA:BB:CC:00:00:02', 'BP-2', 'SN-BP-2', 'blood_pressure') returning id"
        ).fetchone()[0]
        conn.execute(
            "insert into devices (gateway_id, address, model, serial, kind) values"
            " ('gw-f1', 'AA:BB:CC:00:00:03', 'BP-3', 'SN-BP-3', 'blood_pressure')"
        )
        conn.execute(
            "insert into patient_identifiers (patient_id, system, value) values (%s, %s, 'AB123456')", (s.p1, CIN)
        )
        conn.execute(
            "insert into alerts (patient_id, rule, severity, state, raised_at, updated_at)"
            " values (%s, 'spo2_low', 'high', 'open', %s, %s)",
            (s.p1, T0, T0),
        )
    group = uuid.uuid4()
    spo2 = [uuid.uuid4() for _ in range(N_SPO2)]
    rows: list[tuple] = [
        (s.p1, d1, "spo2", 90.0 + i % 8, "%", T0 + timedelta(minutes=i), rid, None, None) for i, rid in enumerate(spo2)
    ]
    flags = '{"cuff_too_loose": true}'
    at = T0 + timedelta(hours=1, seconds=30)
    rows += [
        (s.p1, d1, "systolic_bp", 142.0, "mm[Hg]", at, uuid.uuid4(), group, flags),
        (s.p1, d1, "diastolic_bp", 91.0, "mm[Hg]", at, uuid.uuid4(), group, flags),
        (s.p1, d1, "mean_arterial_pressure", 108.0, "mm[Hg]", at, uuid.uuid4(), group, flags),
        (s.p1, d1, "pulse_rate", 77.0, "/min", at, uuid.uuid4(), group, flags),
        (s.p1, d1, "body_temperature", 100.4, "[degF]", at, uuid.uuid4(), None, None),
        (s.p2, d2, "spo2", 97.0, "%", at, uuid.uuid4(), None, None),
    ]
    insert_readings(db_dsn, rows)
    with LiveServer(create_app(make_settings(db_dsn, ip_failure_limit=10_000))) as server:
        tokens = {who: login(server.url, f"f-{who}") for who in ("doctor", "nurse", "patient", "patient2", "admin")}
        yield Env(s, server.url, tokens, d1, d2, group, spo2)
