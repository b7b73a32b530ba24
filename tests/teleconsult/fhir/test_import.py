"""Import (POST /fhir/r4) on a real uvicorn + database (both flavours): a hand-written PHD-style transaction bundle
(JSON typed here, not built by the mapping code) is stored through the ingest writer, notified like MQTT readings,
read back; replay writes nothing; invalid transactions write nothing; batches answer per entry."""

from __future__ import annotations

import copy
import json
import uuid

import httpx
import psycopg

from tests.teleconsult.fhir.conftest import Env
from tests.teleconsult.fhir.profile import check

UCUM = "http://unitsofmeasure.org"
RID = {name: str(uuid.uuid4()) for name in ("hr", "temp", "weight", "bp", "spo2")}

BUNDLE_TEMPLATE = """
{
  "resourceType": "Bundle",
  "type": "transaction",
  "entry": [
    {
      "fullUrl": "urn:uuid:0b7e9c3a-5d0f-4a55-9a55-000000000001",
      "resource": {
        "resourceType": "Device",
        "identifier": [{"system": "http://hl7.org/fhir/sid/eui-48/bluetooth", "value": "AA:BB:CC:00:00:03"}],
        "serialNumber": "SN-BP-3"
      },
      "request": {"method": "POST", "url": "Device", "ifNoneExist": "identifier=AA:BB:CC:00:00:03"}
    },
    {
      "resource": {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:RID_hr"}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"},
                            {"system": "urn:iso:std:iso:11073:10101", "code": "149546"}]},
        "subject": {"reference": "Patient/PATIENT"},
        "device": {"reference": "urn:uuid:0b7e9c3a-5d0f-4a55-9a55-000000000001"},
        "effectiveDateTime": "2026-11-30T09:15:00+01:00",
        "valueQuantity": {"value": 81, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}
      },
      "request": {"method": "POST", "url": "Observation"}
    },
    {
      "resource": {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:RID_temp"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "subject": {"reference": "Patient/PATIENT"},
        "effectiveDateTime": "2026-11-30T08:16:00Z",
        "valueQuantity": {"value": 101.3, "unit": "degF", "system": "http://unitsofmeasure.org", "code": "[degF]"}
      },
      "request": {"method": "POST", "url": "Observation"}
    },
    {
      "resource": {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:RID_weight"}],
        "code": {"coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "188736"}]},
        "subject": {"reference": "Patient/PATIENT"},
        "effectiveDateTime": "2026-11-30T08:17:00Z",
        "valueQuantity": {"value": 165.0, "unit": "lb", "system": "http://unitsofmeasure.org", "code": "[lb_av]"}
      },
      "request": {"method": "POST", "url": "Observation"}
    },
    {
      "resource": {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:RID_bp"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/PATIENT"},
        "device": {"reference": "urn:uuid:0b7e9c3a-5d0f-4a55-9a55-000000000001"},
        "effectiveDateTime": "2026-11-30T08:15:00Z",
        "component": [
          {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
           "valueQuantity": {"value": 151, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
          {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
           "valueQuantity": {"value": 96, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
        ]
      },
      "request": {"method": "POST", "url": "Observation"}
    },
    {
      "resource": {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:RID_spo2"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
        "subject": {"reference": "Patient/PATIENT"},
        "effectiveDateTime": "2026-11-30T08:18:00Z",
        "valueQuantity": {"value": 93, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
      },
      "request": {"method": "POST", "url": "Observation"}
    }
  ]
}
"""


def hand_written(patient: uuid.UUID) -> dict:
    text = BUNDLE_TEMPLATE.replace("PATIENT", str(patient))
    for name, rid in RID.items():
        text = text.replace(f"RID_{name}", rid)
    return json.loads(text)


def post(env: Env, doc: dict, who: str = "doctor") -> httpx.Response:
    return httpx.post(
        f"{env.url}/fhir/r4", json=doc, headers=env.headers(who) | {"Content-Type": "application/fhir+json"}, timeout=60
    )


def count_rows(env: Env) -> int:
    return env.sql("select count(*) from readings where patient_id = %s", (env.seeded.p1,))[0][0]


def test_hand_written_transaction_is_stored_notified_and_read_back(fhir_env: Env) -> None:
    p1 = fhir_env.seeded.p1
    before = count_rows(fhir_env)
    with psycopg.connect(fhir_env.dsn, autocommit=True) as listen:
        listen.execute("listen tbib_readings")
        r = post(fhir_env, hand_written(p1))
        assert r.status_code == 200, r.text
        resp = r.json()
        check(resp)
        assert resp["type"] == "transaction-response"
        assert [e["response"]["status"] for e in resp["entry"]] == ["200 OK"] + ["201 Created"] * 5
        assert resp["entry"][1]["response"]["location"] == f"Observation/{RID['hr']}"
        notified = []
        for n in listen.notifies(timeout=30, stop_after=1):
            notified += json.loads(n.payload)
    # the alert engine / live sockets get the same notification as for MQTT readings (latest_readings trigger)
    assert {row[0] for row in notified} == {str(p1)}
    assert {"pulse_rate", "body_temperature", "body_weight", "systolic_bp", "diastolic_bp", "spo2"} <= {
        row[1] for row in notified
    }
    assert count_rows(fhir_env) == before + 6  # hr, temp, weight, systolic, diastolic, spo2
    bp3 = fhir_env.sql("select id from devices where address = 'AA:BB:CC:00:00:03'")[0][0]
    hr_row = fhir_env.sql(
        "select metric, value, unit, device_id from readings where reading_id = %s", (uuid.UUID(RID["hr"]),)
    )
    assert hr_row == [("pulse_rate", 81.0, "/min", bp3)]  # MDC 149546 (NIBP pulse) names the metric
    temp = fhir_env.sql("select value, unit, flags from readings where reading_id = %s", (uuid.UUID(RID["temp"]),))
    assert temp[0][0] == 38.5
    assert temp[0][1] == "Cel"
    assert temp[0][2] == {"reported_value": 101.3, "reported_unit": "[degF]"}
    weight = fhir_env.sql("select value, unit from readings where reading_id = %s", (uuid.UUID(RID["weight"]),))
    assert weight == [(74.8427, "kg")]
    dev = fhir_env.sql("select device_id, group_id from readings where reading_id = %s", (uuid.UUID(RID["bp"]),))
    assert dev[0][0] == bp3
    assert dev[0][1] is not None
    # read back through the API
    h = fhir_env.headers("doctor")
    obs = httpx.get(f"{fhir_env.url}/fhir/r4/Observation/{RID['temp']}", headers=h).json()
    check(obs)
    assert obs["valueQuantity"]["value"] == 38.5
    assert any("101.3 [degF]" in n["text"] for n in obs["note"])
    panel = httpx.get(f"{fhir_env.url}/fhir/r4/Observation/{RID['bp']}", headers=h).json()
    check(panel)
    assert {c["code"]["coding"][0]["code"]: c.get("valueQuantity", {}).get("value") for c in panel["component"]} == {
        "8480-6": 151.0,
        "8462-4": 96.0,
    }
    assert panel["device"] == {"reference": f"Device/{bp3}"}
    hr = httpx.get(f"{fhir_env.url}/fhir/r4/Observation/{RID['hr']}", headers=h).json()
    check(hr)
    assert hr["effectiveDateTime"] == "2026-11-30T08:15:00+00:00"
    # replay: no new rows, every entry 200
    r = post(fhir_env, hand_written(p1))
    assert r.status_code == 200, r.text
    assert [e["response"]["status"] for e in r.json()["entry"]] == ["200 OK"] * 6
    assert count_rows(fhir_env) == before + 6
    audit = fhir_env.sql(
        "select count(*) from audit_events where resource = 'POST /fhir/r4' and action = 'write' and patient_id = %s",
        (p1,),
    )
    assert audit[0][0] >= 2


def _obs(patient: uuid.UUID, **change: object) -> dict:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2708-6"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-11-30T10:00:00Z",
        "valueQuantity": {"value": 95, "unit": "%", "system": UCUM, "code": "%"},
    }
    obs.update(change)
    return obs


def _bundle(kind: str, *resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": [{"resource": r} for r in resources]}


def test_invalid_transaction_writes_nothing_and_names_each_entry(fhir_env: Env) -> None:
    p1 = fhir_env.seeded.p1
    before = count_rows(fhir_env)
    doc = _bundle(
        "transaction",
        _obs(p1),
        _obs(
            p1,
            valueQuantity={"value": 72, "unit": "bpm", "system": UCUM, "code": "bpm"},
            code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        ),
        _obs(uuid.uuid4()),
        _obs(p1, device={"reference": f"Device/{uuid.uuid4()}"}),
        {"resourceType": "Patient"},
    )
    r = post(fhir_env, doc)
    assert r.status_code == 400, r.text
    oo = r.json()
    check(oo)
    where = [i["expression"][0] for i in oo["issue"]]
    assert where == [
        "Bundle.entry[1].resource.valueQuantity.code",
        "Bundle.entry[2].resource.subject",
        "Bundle.entry[3].resource.device",
        "Bundle.entry[4].resource",
    ]
    assert "bpm" in oo["issue"][0]["diagnostics"]
    assert count_rows(fhir_env) == before


def test_batch_answers_per_entry(fhir_env: Env) -> None:
    p1, p2 = fhir_env.seeded.p1, fhir_env.seeded.p2
    before = count_rows(fhir_env)
    good = _obs(p1)
    doc = _bundle("batch", good, _obs(p1, effectiveDateTime="2026-11-30"), _obs(p2))
    r = post(fhir_env, doc)
    assert r.status_code == 200, r.text
    resp = r.json()
    check(resp)
    assert resp["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in resp["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "403 Forbidden"]
    assert resp["entry"][1]["response"]["outcome"]["issue"][0]["expression"] == [
        "Bundle.entry[1].resource.effectiveDateTime"
    ]
    assert count_rows(fhir_env) == before + 1


def test_import_refusals(fhir_env: Env) -> None:
    p1, p2 = fhir_env.seeded.p1, fhir_env.seeded.p2
    r = post(fhir_env, _bundle("transaction", _obs(p2)))
    assert r.status_code == 403
    assert r.json()["resourceType"] == "OperationOutcome"
    r = post(fhir_env, _bundle("transaction", _obs(p1)), who="patient2")
    assert r.status_code == 403
    r = post(fhir_env, _bundle("transaction", _obs(p1)), who="patient")  # the patient's own gateway/app
    assert r.status_code == 200, r.text
    bad = httpx.post(f"{fhir_env.url}/fhir/r4", content=b"{not json", headers=fhir_env.headers("doctor"))
    assert bad.status_code == 400
    assert bad.json()["resourceType"] == "OperationOutcome"
    r = post(fhir_env, {"resourceType": "Bundle", "type": "document", "entry": []})
    assert r.status_code == 400
    assert r.json()["issue"][0]["code"] == "not-supported"
    anon = httpx.post(f"{fhir_env.url}/fhir/r4", json=_bundle("transaction", _obs(p1)))
    assert anon.status_code == 401
    assert anon.json()["resourceType"] == "OperationOutcome"


def test_consent_withdrawn_is_refused(fhir_env: Env) -> None:
    p1 = fhir_env.seeded.p1
    before = count_rows(fhir_env)
    fhir_env.sql("insert into consents (patient_id, purpose, granted) values (%s, 'remote_monitoring', false)", (p1,))
    try:
        r = post(fhir_env, _bundle("transaction", _obs(p1)))
        assert r.status_code == 403, r.text
        assert "consent" in r.json()["issue"][0]["diagnostics"]
        assert count_rows(fhir_env) == before
    finally:
        fhir_env.sql(
            "insert into consents (patient_id, purpose, granted) values (%s, 'remote_monitoring', true)", (p1,)
        )


def test_exported_observations_import_back_identically(fhir_env: Env) -> None:
    """Round trip through the API: search -> transaction of the same resources -> all 200 (already stored)."""
    h = fhir_env.headers("doctor")
    b = httpx.get(
        f"{fhir_env.url}/fhir/r4/Observation", params={"patient": str(fhir_env.seeded.p1), "_count": "50"}, headers=h
    ).json()
    entries = [
        {"resource": copy.deepcopy(e["resource"]), "request": {"method": "POST", "url": "Observation"}}
        for e in b["entry"]
    ]
    before = count_rows(fhir_env)
    r = post(fhir_env, {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert r.status_code == 200, r.text
    assert {e["response"]["status"] for e in r.json()["entry"]} == {"200 OK"}
    assert count_rows(fhir_env) == before
