"""No decision on file is no consent (issue 19 item 4), on real PostgreSQL: migration 0110 on existing data, the
ingest enrolment map, the alert engine, FHIR reads (data_sharing) and imports, the patient space and access log."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from teleconsult.alerts.engine import Engine
from teleconsult.alerts.model import Reading
from teleconsult.alerts.rules import EngineConfig, PatientProfile
from teleconsult.alerts.store import profiles
from teleconsult.cli.main import main as cli_main
from teleconsult.ingest.payload import CONSENT_WITHDRAWN
from teleconsult.security import consent
from teleconsult.security.models import ConsentPurpose
from teleconsult.store.enrolment import enrolment_map
from teleconsult.store.migrate import load_migrations, upgrade
from tests.teleconsult.api.helpers import PASSWORD, Seeded, asgi_client, make_settings, seed

LEGACY = "0110_consent_default.sql"


def _upgrade_all_but_0110(dsn: str) -> None:
    """The database as it was before this change: every other migration applied, 0110 not."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "create table schema_migrations (name text primary key, flavour text not null,"
            " applied_at timestamptz not null default now())"
        )
        for m in load_migrations():
            if m.name == LEGACY:
                continue
            with conn.transaction():
                conn.execute(m.sql_for("plain").encode())
                conn.execute("insert into schema_migrations (name, flavour) values (%s, 'plain')", (m.name,))


def _patient(conn: psycopg.Connection[Any], name: str) -> uuid.UUID:
    row = conn.execute("insert into patients (display_name) values (%s) returning id", (name,)).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def test_migration_records_legacy_monitoring_consent_only_for_patients_already_monitored(
    make_database: Any,
) -> None:
    dsn = make_database("plain")
    _upgrade_all_but_0110(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        gw_only = _patient(conn, "gateway, no decision")
        conn.execute("insert into gateways (id, patient_id) values ('gw-l1', %s)", (gw_only,))
        dev_only = _patient(conn, "device bound to the patient, no decision")
        conn.execute("insert into gateways (id) values ('gw-l2')")
        conn.execute("insert into devices (gateway_id, patient_id, address) values ('gw-l2', %s, 'AA:01')", (dev_only,))
        data_only = _patient(conn, "readings, no decision")
        conn.execute(
            "insert into latest_readings (patient_id, metric, value, unit, measured_at, reading_id)"
            " values (%s, 'spo2', 97, '%%', now(), gen_random_uuid())",
            (data_only,),
        )
        nothing = _patient(conn, "nothing processed")
        withdrew = _patient(conn, "withdrew")
        conn.execute("insert into gateways (id, patient_id) values ('gw-l3', %s)", (withdrew,))
        conn.execute(
            "insert into consents (patient_id, purpose, granted) values (%s, 'remote_monitoring', false)", (withdrew,)
        )
        # before 0110 the enrolment map read "no decision" as consent
        before = conn.execute("select count(*) from consents").fetchone()
    assert before == (1,)
    assert upgrade(dsn) == [LEGACY]
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select patient_id, purpose, granted, basis, recorded_by from consents order by id"
        ).fetchall()
        ok = {
            p: conn.execute("select tbib_has_consent(%s, %s)", (p, purpose)).fetchone()[0]  # type: ignore[index]
            for p in (gw_only, dev_only, data_only, nothing, withdrew)
            for purpose in ["remote_monitoring"]
        }
    legacy = {r[0] for r in rows if r[3] == "legacy"}
    assert legacy == {gw_only, dev_only, data_only}
    assert all(r[1] == "remote_monitoring" and r[2] is True and r[4] is None for r in rows if r[3] == "legacy")
    assert not any(r[1] in ("teleconsultation", "data_sharing") for r in rows)  # never invented
    assert ok == {gw_only: True, dev_only: True, data_only: True, nothing: False, withdrew: False}
    assert upgrade(dsn) == []  # re-runnable: nothing recorded twice


@pytest.fixture(scope="module")
def seeded(make_database: Any) -> Seeded:
    dsn = make_database("plain")
    upgrade(dsn)
    return seed(dsn, prefix="cd")


async def test_enrolment_map_refuses_a_patient_with_no_decision(seeded: Seeded) -> None:
    async with await psycopg.AsyncConnection.connect(seeded.dsn, autocommit=True) as conn:
        pid = uuid.uuid4()
        await conn.execute("insert into patients (id, display_name) values (%s, 'No decision')", (pid,))
        await conn.execute("insert into gateways (id, patient_id) values ('gw-cd-1', %s)", (pid,))
        await conn.execute("insert into devices (gateway_id, address) values ('gw-cd-1', 'DD:01')")
        assert (await enrolment_map(conn))[("gw-cd-1", "DD:01")].monitoring_consent is False
        await consent.record(
            conn, patient_id=pid, purpose=ConsentPurpose.REMOTE_MONITORING, granted=True, recorded_by=None
        )
        assert (await enrolment_map(conn))[("gw-cd-1", "DD:01")].monitoring_consent is True
        await consent.record(
            conn, patient_id=pid, purpose=ConsentPurpose.REMOTE_MONITORING, granted=False, recorded_by=None
        )
        assert (await enrolment_map(conn))[("gw-cd-1", "DD:01")].monitoring_consent is False


async def test_alert_engine_raises_nothing_without_monitoring_consent(seeded: Seeded) -> None:
    async with await psycopg.AsyncConnection.connect(seeded.dsn, autocommit=True) as conn:
        pid = uuid.uuid4()
        await conn.execute("insert into patients (id, display_name) values (%s, 'Engine no consent')", (pid,))
        # the store's profile says so, and a decision notifies the engine leader to reload it
        await conn.execute("listen tbib_alert_events")
        by_id = {p.patient_id: p for p in await profiles(conn)}
        assert by_id[str(pid)].monitoring is False
        assert by_id[str(seeded.p1)].monitoring is True
        await consent.record(
            conn, patient_id=pid, purpose=ConsentPurpose.REMOTE_MONITORING, granted=True, recorded_by=None
        )
        notes = []
        async for n in conn.notifies(timeout=5.0, stop_after=1):
            notes.append(n.payload)
        assert notes == [f"profile:{pid}"]
        assert {p.patient_id: p for p in await profiles(conn)}[str(pid)].monitoring is True
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    events = {}
    for monitoring in (True, False):
        engine = Engine(EngineConfig())
        engine.set_patient(PatientProfile("p", monitoring=monitoring), now)
        for i in range(20):
            at = now + timedelta(seconds=30 * i)
            engine.receive(Reading("p", "spo2", 82.0, "%", at, None), at)
            engine.handle_timer(at)
        out = []
        while (ev := engine.next_event()) is not None:
            out.append(ev)
        events[monitoring] = out
    assert events[True]  # an SpO2 of 82 % raises with consent ...
    assert events[False] == []  # ... and nothing without it


async def test_fhir_reads_need_data_sharing_except_for_the_patient(
    seeded: Seeded,
) -> None:
    settings = make_settings(seeded.dsn, ext={"alerts": {"enabled": False}})
    async with asgi_client(settings) as c:

        async def bearer(user: str) -> dict[str, str]:
            r = await c.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        doctor, patient = await bearer("cd-doctor"), await bearer("cd-patient")
        with psycopg.connect(seeded.dsn, autocommit=True) as conn:  # p1 loses data_sharing: newest decision wins
            conn.execute(
                "insert into consents (patient_id, purpose, granted) values (%s, 'data_sharing', false)", (seeded.p1,)
            )
        url = f"/fhir/r4/Observation?patient={seeded.p1}"
        r = await c.get(url, headers=doctor)
        assert r.status_code == 403
        assert "data_sharing" in r.json()["issue"][0]["diagnostics"]
        assert (await c.get(f"/fhir/r4/Patient/{seeded.p1}/$everything", headers=doctor)).status_code == 403
        assert (await c.get(url, headers=patient)).status_code == 200  # right of access: the patient reads their own
        with psycopg.connect(seeded.dsn, autocommit=True) as conn:
            conn.execute(
                "insert into consents (patient_id, purpose, granted) values (%s, 'data_sharing', true)", (seeded.p1,)
            )
            denied = conn.execute(
                "select count(*) from audit_events where patient_id = %s and outcome = 'denied'"
                " and detail->>'reason' = 'no data_sharing consent'",
                (seeded.p1,),
            ).fetchone()
        assert denied == (2,)
        assert (await c.get(url, headers=doctor)).status_code == 200


async def test_patient_space_shows_consents_meaning_and_refused_readings(seeded: Seeded) -> None:
    settings = make_settings(seeded.dsn, ext={"alerts": {"enabled": False}})
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        conn.execute("insert into gateways (id, patient_id) values ('gw-cd-space', %s)", (seeded.p1,))
        dev = conn.execute(
            "insert into devices (gateway_id, address, model, kind) values ('gw-cd-space', 'EE:01', 'Oxi', 'plx')"
            " returning id"
        ).fetchone()
        assert dev is not None
        conn.execute(
            "insert into latest_readings (patient_id, metric, value, unit, measured_at, reading_id, device_id)"
            " values (%s, 'battery_level', 14, '%%', now(), gen_random_uuid(), %s)",
            (seeded.p1, dev[0]),
        )
        conn.execute(
            "insert into dead_letters (topic, gateway_id, reason, payload, payload_size) values"
            " ('tbib/v1/gw/gw-cd-space/readings', 'gw-cd-space', %s, '', 120)",
            (f"reading r1: {CONSENT_WITHDRAWN}",),
        )
    async with asgi_client(settings) as c:

        async def bearer(user: str) -> dict[str, str]:
            r = await c.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        patient, doctor = await bearer("cd-patient"), await bearer("cd-doctor")
        assert (await c.get(f"/api/v1/patients/{seeded.p1}/space", headers=doctor)).status_code == 403
        assert (await c.get(f"/api/v1/patients/{seeded.p2}/space", headers=patient)).status_code == 403
        r = await c.get(f"/api/v1/patients/{seeded.p1}/space", headers=patient)
        assert r.status_code == 200
        space = r.json()
        by = {x["purpose"]: x for x in space["consents"]}
        assert by["remote_monitoring"]["granted"] is True
        assert by["teleconsultation"] == by["teleconsultation"] | {"granted": False, "decided": False, "basis": None}
        assert all(x["allows"] and x["without"] for x in space["consents"])
        assert space["refused_readings"]["messages"] == 1
        oxi = next(d for d in space["devices"] if d["address"] == "EE:01")
        assert (oxi["battery_pct"], oxi["battery_low"], oxi["last_measured_at"]) == (14, True, None)
        # the patient withdraws, then reads who accessed the record, without their own visits
        r = await c.post(
            f"/api/v1/patients/{seeded.p1}/consents", headers=patient,
            json={"purpose": "remote_monitoring", "granted": False},
        )  # fmt: skip
        assert r.status_code == 201
        assert r.json()["basis"] == "explicit"
        await c.get(f"/api/v1/patients/{seeded.p1}", headers=doctor)
        log = (await c.get(f"/api/v1/patients/{seeded.p1}/access-log?others_only=true", headers=patient)).json()
        assert log
        assert {e["actor_username"] for e in log} <= {"cd-doctor", "cd-admin", "cd-nurse", "cd-pharmacist", None}
        assert any(e["actor_display_name"] == "cd-doctor" for e in log)  # seeded with display name = username
        everything = (await c.get(f"/api/v1/patients/{seeded.p1}/access-log", headers=patient)).json()
        assert any(e["actor_username"] == "cd-patient" for e in everything)


def test_fhir_file_export_needs_data_sharing_unless_it_is_for_the_patient(
    seeded: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p2.json"
    args = ["fhir", "export", str(seeded.p2), "--database-url", seeded.dsn, "-o", str(out)]
    assert cli_main(args) != 0  # p2 never decided on data sharing
    assert "no data_sharing consent" in capsys.readouterr().err
    assert cli_main([*args, "--for-patient"]) == 0  # the patient's own copy (right of access)
    assert json.loads(out.read_text())["type"] == "collection"
    with psycopg.connect(seeded.dsn) as conn:
        rows = conn.execute(
            "select outcome, detail->>'reason', detail->>'basis' from audit_events"
            " where patient_id = %s and action = 'export' order by id",
            (seeded.p2,),
        ).fetchall()
    assert rows == [("denied", "no data_sharing consent", None), ("allowed", None, "patient_request")]


def test_enrolling_a_gateway_warns_when_the_patient_has_not_consented(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        pid = _patient(conn, "Enrolled without consent")
        consenting = _patient(conn, "Enrolled with consent")
        conn.execute(
            "insert into consents (patient_id, purpose, granted) values (%s, 'remote_monitoring', true)", (consenting,)
        )
    db = ["--database-url", seeded.dsn]
    assert cli_main(["pki", "enroll-gateway", "gw-cd-warn", "--patient-id", str(pid), *db]) == 0
    assert "no remote_monitoring consent in force" in capsys.readouterr().err
    assert cli_main(["pki", "enroll-gateway", "gw-cd-ok", "--patient-id", str(consenting), *db]) == 0
    assert "remote_monitoring" not in capsys.readouterr().err
