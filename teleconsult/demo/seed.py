"""Demo data: a doctor, K patients (one gateway with a kit of simulated devices each), care team and consents.

Idempotent: ids derive from the patient index, so a second ``tbib demo`` reuses the same records and keeps their
history. The simulated devices' BLE addresses come from :mod:`devices.sim` with the same seed the gateway uses.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import psycopg

from devices.sim import SimWorld
from teleconsult.security.passwords import hash_password
from teleconsult.store.rollups import rebuild_sync

SCENARIOS: Final = ("stable", "hypoxia", "sepsis", "hypertensive_crisis", "afib", "device_misuse")
NAMES: Final = (
    "Fatima Zahra El Idrissi",
    "Mohamed Benjelloun",
    "Khadija Alaoui",
    "Youssef Tazi",
    "Aicha Bennani",
    "Omar Chraibi",
    "Salma Berrada",
    "Hassan Lahlou",
)
DOCTOR: Final = "dr.demo"
#: The first demo patient's own account (the patient space, /patient), same password as the doctor.
PATIENT: Final = "patient.demo"
#: The demo pharmacy's pharmacist (e-prescriptions, ``#/pharmacy``), same password as the doctor.
PHARMACIST: Final = "pharmacie.demo"
PHARMACY_ID: Final = uuid.UUID("2f0c8a51-6b7e-4d3a-9c1f-5e8d7a6b4c30")
NAMESPACE: Final = uuid.UUID("5b7f3c1e-9d0a-4f57-8a53-0c1d2e3f4a5b")


@dataclass(frozen=True)
class DemoPatient:
    """One simulated patient."""

    index: int
    patient_id: uuid.UUID
    name: str
    scenario: str
    gateway_id: str
    seed: int


@dataclass(frozen=True)
class DemoCast:
    """What :func:`seed` created."""

    doctor: str
    password: str
    doctor_id: uuid.UUID
    patients: list[DemoPatient]
    patient: str = PATIENT
    """The first patient's own account."""
    pharmacist: str = PHARMACIST
    """The demo pharmacy's pharmacist account."""


def credentials(data_dir: Path) -> tuple[str, str]:
    """The demo's secret key and the doctor's password (generated once, kept in the data directory)."""
    path = data_dir / "credentials.json"
    if path.is_file():
        data = json.loads(path.read_text())
    else:
        data = {"secret_key": secrets.token_urlsafe(48), "password": secrets.token_urlsafe(9)}
        path.write_text(json.dumps(data))
        path.chmod(0o600)
    return str(data["secret_key"]), str(data["password"])


def plan(count: int) -> list[DemoPatient]:
    """``count`` patients cycling through the scenarios."""
    out = []
    for i in range(count):
        name = NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else f" {i // len(NAMES) + 1}")
        out.append(
            DemoPatient(
                index=i,
                patient_id=uuid.uuid5(NAMESPACE, f"patient-{i}"),
                name=name,
                scenario=SCENARIOS[i % len(SCENARIOS)],
                gateway_id=f"gw-demo-{i + 1:02d}",
                seed=100 + i,
            )
        )
    return out


def seed(dsn: str, patients: list[DemoPatient], password: str) -> DemoCast:
    """Create or refresh the demo records; the doctor's password is (re)set to ``password``."""
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        row = conn.execute(
            "insert into users (username, display_name, role, password_hash) values (%s, %s, 'doctor', %s)"
            " on conflict (username) do update set password_hash = excluded.password_hash, disabled = false"
            " returning id",
            (DOCTOR, "Dr Demo Benali", hash_password(password)),
        ).fetchone()
        assert row is not None
        doctor_id = uuid.UUID(str(row[0]))
        # Printed on the ordonnance; a made-up number, marked as such.
        conn.execute("update users set registration_number = 'DEMO-0001' where id = %s", (doctor_id,))
        conn.execute(
            "insert into pharmacies (id, name, city, address) values (%s, 'Pharmacie de démonstration', 'Rabat',"
            " 'Avenue Mohammed V') on conflict (id) do nothing",
            (PHARMACY_ID,),
        )
        conn.execute(
            "insert into users (username, display_name, role, password_hash, pharmacy_id)"
            " values (%s, %s, 'pharmacist', %s, %s) on conflict (username) do update"
            " set password_hash = excluded.password_hash, pharmacy_id = excluded.pharmacy_id, disabled = false",
            (PHARMACIST, "Pharmacien Démo", hash_password(password), PHARMACY_ID),
        )
        for p in patients:
            conn.execute(
                "insert into patients (id, display_name) values (%s, %s)"
                " on conflict (id) do update set display_name = excluded.display_name",
                (p.patient_id, p.name),
            )
            conn.execute(
                "insert into gateways (id, patient_id) values (%s, %s)"
                " on conflict (id) do update set patient_id = excluded.patient_id",
                (p.gateway_id, p.patient_id),
            )
            world = SimWorld.create(1, p.scenario, seed=p.seed, start=now)
            for kind, dev in world.patients[0].devices.items():
                conn.execute(
                    "insert into devices (gateway_id, patient_id, address, model, serial, kind)"
                    " values (%s, %s, %s, %s, %s, %s) on conflict (gateway_id, address) do update"
                    " set patient_id = excluded.patient_id, model = excluded.model, kind = excluded.kind",
                    (p.gateway_id, p.patient_id, dev.address, dev.model, dev.serial, kind),
                )
            active = conn.execute(
                "select 1 from care_team where clinician_id = %s and patient_id = %s"
                " and valid_from <= now() and (valid_to is null or valid_to > now())",
                (doctor_id, p.patient_id),
            ).fetchone()
            if active is None:
                conn.execute(
                    "insert into care_team (clinician_id, patient_id, valid_from, created_by)"
                    " values (%s, %s, now(), %s)",
                    (doctor_id, p.patient_id, doctor_id),
                )
            for purpose in ("remote_monitoring", "teleconsultation"):
                conn.execute(
                    "insert into consents (patient_id, purpose, granted, recorded_by, note)"
                    " select %s, %s, true, %s, 'tbib demo' where not coalesce(tbib_has_consent(%s, %s), false)",
                    (p.patient_id, purpose, doctor_id, p.patient_id, purpose),
                )
        if patients:  # the first patient logs in to their own space
            conn.execute(
                "insert into users (username, display_name, role, password_hash, patient_id)"
                " values (%s, %s, 'patient', %s, %s) on conflict (username) do update"
                " set password_hash = excluded.password_hash, patient_id = excluded.patient_id, disabled = false",
                (PATIENT, patients[0].name, hash_password(password), patients[0].patient_id),
            )
    return DemoCast(DOCTOR, password, doctor_id, patients)


#: (metric, unit, Vitals attribute, seconds between readings) of the backfilled history.
HISTORY: Final = (
    ("heart_rate", "/min", "heart_rate", 120),
    ("pulse_rate", "/min", "pulse_rate", 120),
    ("spo2", "%", "spo2", 120),
    ("systolic_bp", "mm[Hg]", "systolic", 7200),
    ("diastolic_bp", "mm[Hg]", "diastolic", 7200),
    ("body_temperature", "Cel", "body_temperature", 14400),
    ("body_weight", "kg", "weight_kg", 86400),
    ("glucose", "mg/dL", "glucose_mg_dl", 21600),
)


def backfill(dsn: str, patients: list[DemoPatient], hours: float) -> int:
    """Readings of the ``hours`` before now from the same physiology (stable: the deterioration starts with the demo).

    Written straight into ``readings`` (not through ingest), once: patients that already have readings older than
    10 minutes are left alone. Returns the number of rows written.
    """
    from devices.sim.physiology import PatientProfile, vitals_at

    if hours <= 0:
        return 0
    now = datetime.now(UTC)
    start = now - timedelta(hours=hours)
    written = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for p in patients:
            old = conn.execute(
                "select 1 from readings where patient_id = %s and measured_at < %s limit 1",
                (p.patient_id, now - timedelta(minutes=10)),
            ).fetchone()
            if old is not None:
                continue
            profile = PatientProfile.generate(p.seed, 0, start=start)
            rows = []
            for metric, unit, attr, step in HISTORY:
                t = start + timedelta(seconds=step / 2)
                while t < now - timedelta(minutes=1):
                    value = float(getattr(vitals_at(profile, "stable", t), attr))
                    rows.append((p.patient_id, metric, round(value, 2), unit, t, t, uuid.uuid4()))
                    t += timedelta(seconds=step)
            with (
                conn.transaction(),
                conn.cursor().copy(
                    "copy readings (patient_id, metric, value, unit, measured_at, received_at, reading_id) from stdin"
                ) as cp,
            ):
                for row in rows:
                    cp.write_row(row)
            rebuild_sync(conn, start=start, end=now, patient_id=p.patient_id)  # not through ingest: rollups too
            written += len(rows)
    return written
