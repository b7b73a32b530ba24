"""Read and search API on a real uvicorn + database (both storage flavours): resources valid (fhir.resources R4B +
profile check), care-team rules, audit rows, OperationOutcome errors, stable keyset paging."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest

from tests.teleconsult.fhir.conftest import CIN, N_SPO2, T0, Env, insert_readings
from tests.teleconsult.fhir.profile import check


def get(env: Env, path: str, who: str | None = "doctor", **params: object) -> httpx.Response:
    url = path if path.startswith("http") else f"{env.url}/fhir/r4/{path}"
    return httpx.get(url, params=params or None, headers=env.headers(who) if who else {}, timeout=30)


def ok(r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    doc = r.json()
    check(doc)
    return doc


def assert_outcome(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    doc = r.json()
    assert doc["resourceType"] == "OperationOutcome"
    assert "detail" not in doc
    check(doc)
    return doc


def audit_count(env: Env, resource_like: str) -> int:
    return env.sql("select count(*) from audit_events where resource like %s", (resource_like,))[0][0]


def test_metadata_lists_what_is_implemented(fhir_env: Env) -> None:
    cs = ok(get(fhir_env, "metadata", who=None))
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    medication = {"MedicationRequest", "MedicationDispense", "Medication"}  # issue 18
    assert set(by_type) == {"Patient", "Device", "Observation", "Flag", "AuditEvent"} | medication
    assert {p["name"] for p in by_type["Observation"]["searchParam"]} == {
        "patient",
        "subject",
        "code",
        "date",
        "category",
        "_count",
        "_sort",
        "_total",
    }
    assert {i["code"] for i in cs["rest"][0]["interaction"]} == {"transaction", "batch"}


def test_patient_read_care_team_and_audit(fhir_env: Env) -> None:
    s = fhir_env.seeded
    before = audit_count(fhir_env, "GET /fhir/r4/Patient/{patient_id}")
    pat = ok(get(fhir_env, f"Patient/{s.p1}"))
    assert pat["id"] == str(s.p1)
    assert {"use": "official", "system": CIN, "value": "AB123456"} in pat["identifier"]
    ok(get(fhir_env, f"Patient/{s.p1}", who="patient"))
    assert_outcome(get(fhir_env, f"Patient/{s.p2}"), 403)
    assert_outcome(get(fhir_env, f"Patient/{s.p1}", who="patient2"), 403)
    oo = assert_outcome(get(fhir_env, f"Patient/{s.p1}", who=None), 401)
    assert oo["issue"][0]["code"] == "login"
    assert_outcome(get(fhir_env, "Patient/not-a-uuid"), 404)
    assert audit_count(fhir_env, "GET /fhir/r4/Patient/{patient_id}") == before + 4
    rows = fhir_env.sql(
        "select outcome, actor_username from audit_events where resource = 'GET /fhir/r4/Patient/{patient_id}'"
        " order by id desc limit 4"
    )
    assert rows == [("denied", "f-patient2"), ("denied", "f-doctor"), ("allowed", "f-patient"), ("allowed", "f-doctor")]


def test_patient_search_by_identifier(fhir_env: Env) -> None:
    s = fhir_env.seeded
    b = ok(get(fhir_env, "Patient", identifier=f"{CIN}|AB123456"))
    assert b["type"] == "searchset"
    assert b["total"] == 1
    assert b["entry"][0]["resource"]["id"] == str(s.p1)
    assert ok(get(fhir_env, "Patient", identifier="AB123456"))["total"] == 1
    assert ok(get(fhir_env, "Patient", identifier=f"urn:ietf:rfc:3986|urn:uuid:{s.p1}"))["total"] == 1
    assert ok(get(fhir_env, "Patient", who="patient2", identifier=f"{CIN}|AB123456"))["total"] == 0
    assert ok(get(fhir_env, "Patient", identifier=f"{CIN}|nope"))["total"] == 0
    assert_outcome(get(fhir_env, "Patient", name="x"), 400)


def test_device_and_gateway_read(fhir_env: Env) -> None:
    dev = ok(get(fhir_env, f"Device/{fhir_env.device1}"))
    assert dev["identifier"] == [{"system": "http://hl7.org/fhir/sid/eui-48/bluetooth", "value": "AA:BB:CC:00:00:01"}]
    assert dev["serialNumber"] == "SN-OX-1"
    assert dev["parent"] == {"reference": "Device/gw.gw-f1"}
    gw = ok(get(fhir_env, "Device/gw.gw-f1"))
    assert gw["identifier"][0]["value"] == "gw-f1"
    assert_outcome(get(fhir_env, f"Device/{fhir_env.device2}"), 403)
    assert_outcome(get(fhir_env, f"Device/{uuid.uuid4()}"), 404)


def test_observation_read_and_errors(fhir_env: Env) -> None:
    rid = fhir_env.spo2_ids[3]
    obs = ok(get(fhir_env, f"Observation/{rid}"))
    assert obs["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{rid}"}]
    assert obs["effectiveDateTime"] == (T0 + timedelta(minutes=3)).isoformat()
    assert obs["device"] == {"reference": f"Device/{fhir_env.device1}"}
    assert_outcome(get(fhir_env, f"Observation/{rid}", who="patient2"), 403)
    oo = assert_outcome(get(fhir_env, f"Observation/{uuid.uuid4()}"), 404)
    assert oo["issue"][0]["code"] == "not-found"
    assert_outcome(get(fhir_env, "Encounter/1"), 404)
    assert_outcome(httpx.delete(f"{fhir_env.url}/fhir/r4/Observation/{rid}", headers=fhir_env.headers("doctor")), 404)


@pytest.mark.parametrize(
    "params",
    [
        {"foo": "1"},
        {"date": "yesterday"},
        {"date": "ne2026-11-01"},
        {"_count": "0"},
        {"_count": "abc"},
        {"_sort": "value"},
        {"_page": "garbage"},
        {"_format": "xml"},
    ],
)
def test_bad_search_parameters_answer_400(fhir_env: Env, params: dict) -> None:
    oo = assert_outcome(get(fhir_env, "Observation", patient=str(fhir_env.seeded.p1), **params), 400)
    assert oo["issue"][0]["code"] == "invalid"


def test_search_requires_patient_and_care_team(fhir_env: Env) -> None:
    assert_outcome(get(fhir_env, "Observation", code="2708-6"), 400)
    assert_outcome(get(fhir_env, "Observation", patient=str(fhir_env.seeded.p2)), 403)
    assert_outcome(get(fhir_env, "Observation", patient=str(fhir_env.seeded.p1), who=None), 401)


def test_search_blood_pressure_panel_and_temperature(fhir_env: Env) -> None:
    p1 = str(fhir_env.seeded.p1)
    b = ok(get(fhir_env, "Observation", patient=p1, code="http://loinc.org|85354-9"))
    assert b["total"] == 1
    panel = b["entry"][0]["resource"]
    assert {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in panel["component"]} == {
        "8480-6": 142.0,
        "8462-4": 91.0,
        "8478-0": 108.0,
    }
    assert panel["interpretation"] == [{"text": "cuff too loose"}]
    temp = ok(get(fhir_env, "Observation", patient=p1, code="8310-5"))["entry"][0]["resource"]
    assert temp["valueQuantity"]["code"] == "Cel"
    assert temp["valueQuantity"]["value"] == 38.0
    pulse = ok(get(fhir_env, "Observation", patient=f"Patient/{p1}", code="urn:iso:std:iso:11073:10101|149530"))
    assert pulse["total"] == 1
    vitals = ok(get(fhir_env, "Observation", patient=p1, category="vital-signs", _count="1000"))
    assert vitals["total"] == N_SPO2 + 3  # spo2, one BP panel, pulse, temperature
    assert ok(get(fhir_env, "Observation", patient=p1, category="laboratory"))["total"] == 0


def test_date_filters_and_sort(fhir_env: Env) -> None:
    p1 = str(fhir_env.seeded.p1)
    lo, hi = (T0 + timedelta(minutes=10)).isoformat(), (T0 + timedelta(minutes=19)).isoformat()
    b = ok(get(fhir_env, "Observation", patient=p1, code="2708-6", date=[f"ge{lo}", f"le{hi}"], _sort="date"))
    assert b["total"] == 10
    times = [e["resource"]["effectiveDateTime"] for e in b["entry"]]
    assert times == sorted(times)
    assert times[0] == lo
    b = ok(get(fhir_env, "Observation", patient=p1, code="2708-6", date=f"gt{lo}", _count="5"))
    times = [e["resource"]["effectiveDateTime"] for e in b["entry"]]
    assert times == sorted(times, reverse=True)  # default -date
    assert b["total"] == N_SPO2 - 11
    assert ok(get(fhir_env, "Observation", patient=p1, code="2708-6", date="2026-11-01"))["total"] == N_SPO2


def test_paging_is_stable_while_readings_arrive(fhir_env: Env) -> None:
    p1 = fhir_env.seeded.p1
    first = ok(get(fhir_env, "Observation", patient=str(p1), code="2708-6", _count="100"))
    assert first["total"] == N_SPO2
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert "previous" not in links
    # new readings arrive while the client pages: newer ones, and a late one inside the range being paged
    late = [
        (p1, fhir_env.device1, "spo2", 99.0, "%", T0 + timedelta(minutes=500 + i), uuid.uuid4(), None, None)
        for i in range(3)
    ]
    late.append(
        (p1, fhir_env.device1, "spo2", 99.0, "%", T0 + timedelta(minutes=100, seconds=30), uuid.uuid4(), None, None)
    )
    insert_readings(fhir_env.dsn, late)
    pages = [first]
    while "next" in links:
        page = ok(get(fhir_env, links["next"]))
        assert page["total"] == N_SPO2
        pages.append(page)
        links = {link["relation"]: link["url"] for link in page["link"]}
    ids = [e["resource"]["id"] for p in pages for e in p["entry"]]
    assert [len(p["entry"]) for p in pages] == [100, 100, 50]
    assert len(set(ids)) == len(ids) == N_SPO2
    assert set(ids) == {str(i) for i in fhir_env.spo2_ids}
    # previous of page 2 is page 1 again
    second_links = {link["relation"]: link["url"] for link in pages[1]["link"]}
    back = ok(get(fhir_env, second_links["previous"]))
    assert [e["resource"]["id"] for e in back["entry"]] == [e["resource"]["id"] for e in first["entry"]]
    # a new search sees the new readings
    assert ok(get(fhir_env, "Observation", patient=str(p1), code="2708-6", _count="1"))["total"] == N_SPO2 + 4
    fhir_env.sql("delete from readings where reading_id = any(%s)", ([r[6] for r in late],))


def test_total_none_and_single_page_total(fhir_env: Env) -> None:
    p1 = str(fhir_env.seeded.p1)
    b = ok(get(fhir_env, "Observation", patient=p1, code="2708-6", _count="10", _total="none"))
    assert "total" not in b
    assert len(b["entry"]) == 10
    assert ok(get(fhir_env, "Observation", patient=p1, code="8310-5"))["total"] == 1  # one page: no count needed
    assert_outcome(get(fhir_env, "Observation", patient=p1, _total="estimate"), 400)


def test_everything(fhir_env: Env) -> None:
    s = fhir_env.seeded
    start = T0.date().isoformat()
    b = ok(get(fhir_env, f"Patient/{s.p1}/$everything", start=start, _count="200"))
    types = [e["resource"]["resourceType"] for e in b["entry"]]
    assert types[:1] == ["Patient"]
    assert types.count("Device") == 3  # gateway + 2 devices
    assert types.count("Flag") == 1
    assert types.count("Observation") == 200
    links = {link["relation"]: link["url"] for link in b["link"]}
    seen = 200
    while "next" in links:
        page = ok(get(fhir_env, links["next"]))
        assert {e["resource"]["resourceType"] for e in page["entry"]} == {"Observation"}
        seen += len(page["entry"])
        links = {link["relation"]: link["url"] for link in page["link"]}
    assert seen == N_SPO2 + 3
    assert_outcome(get(fhir_env, f"Patient/{s.p2}/$everything"), 403)
    assert_outcome(get(fhir_env, f"Patient/{s.p1}/$everything", code="x"), 400)
    assert audit_count(fhir_env, "GET /fhir/r4/Patient/{patient_id}/$everything") >= 3


def test_audit_events_for_admins(fhir_env: Env) -> None:
    p1 = fhir_env.seeded.p1
    ok(get(fhir_env, f"Patient/{p1}", who="nurse"))
    b = ok(get(fhir_env, "AuditEvent", who="admin", patient=str(p1), _count="2"))
    assert len(b["entry"]) == 2
    newest = b["entry"][0]["resource"]
    assert newest["entity"][0]["description"] == "GET /fhir/r4/AuditEvent"  # reading the audit trail is audited
    second = b["entry"][1]["resource"]
    assert second["action"] == "R"
    assert second["outcome"] == "0"
    assert second["agent"][0]["who"]["display"] == "f-nurse"
    assert second["entity"][0]["what"] == {"reference": f"Patient/{p1}"}
    nxt = next(link["url"] for link in b["link"] if link["relation"] == "next")
    older = ok(get(fhir_env, nxt, who="admin"))
    assert int(older["entry"][0]["resource"]["id"]) < int(second["id"])
    assert_outcome(get(fhir_env, "AuditEvent", who="doctor", patient=str(p1)), 403)
    assert_outcome(get(fhir_env, "AuditEvent", who=None, patient=str(p1)), 401)
    assert_outcome(get(fhir_env, "AuditEvent", who="admin"), 400)
