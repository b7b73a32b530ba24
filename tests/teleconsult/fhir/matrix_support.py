"""Authorization-matrix factories for the /fhir/r4 routes (issue 17): a device, a reading and a one-entry transaction
bundle of the patient under test, made fresh for each call."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg


def device_id(ctx: Any) -> str:
    """A device enrolled (with its own gateway) for the patient under test."""
    gw = f"gw-m-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ctx.seeded.dsn, autocommit=True) as conn:
        conn.execute("insert into gateways (id, patient_id) values (%s, %s)", (gw, ctx.patient_id))
        row = conn.execute(
            "insert into devices (gateway_id, address, kind) values (%s, 'AA:00:00:00:00:01', 'scale') returning id",
            (gw,),
        ).fetchone()
    assert row is not None
    return str(row[0])


def observation_id(ctx: Any) -> str:
    """A stored heart-rate reading of the patient under test."""
    rid = uuid.uuid4()
    with psycopg.connect(ctx.seeded.dsn, autocommit=True) as conn:
        conn.execute(
            "insert into readings (patient_id, metric, value, unit, measured_at, reading_id)"
            " values (%s, 'heart_rate', 70, '/min', now(), %s)",
            (ctx.patient_id, rid),
        )
    return str(rid)


def transaction_body(ctx: Any) -> dict[str, Any]:
    """A transaction Bundle with one new heart-rate Observation of the patient under test."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": f"Patient/{ctx.patient_id}"},
                    "effectiveDateTime": "2026-11-29T10:00:00+00:00",
                    "valueQuantity": {
                        "value": 71,
                        "unit": "/min",
                        "system": "http://unitsofmeasure.org",
                        "code": "/min",
                    },
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
