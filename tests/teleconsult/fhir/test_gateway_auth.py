"""Gateway imports with the broker credential (HTTP Basic ``gateway_id:secret``) on both storage flavours: own patient
only, own devices only, never a read, wrong or revoked secrets refused at once, every attempt audited as the gateway."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from teleconsult.security.enrolment import enroll_gateway, revoke_gateway
from teleconsult.security.gateway_auth import VerifiedSecrets
from teleconsult.security.mosquitto import hash_password
from tests.teleconsult.fhir.conftest import Env

BT: str = "http://hl7.org/fhir/sid/eui-48/bluetooth"


def basic(gateway_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{gateway_id}:{secret}".encode()).decode()}


def enroll(env: Env, gateway_id: str, patient_id: uuid.UUID) -> str:
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        return enroll_gateway(conn, gateway_id, patient_id=patient_id)


def heart_rate(patient_id: uuid.UUID, rid: uuid.UUID, device_ref: str | None = None) -> dict[str, Any]:
    """A hand-written PHD-style heart-rate Observation entry."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{rid}"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-11-30T09:00:00+00:00",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }
    if device_ref is not None:
        resource["device"] = {"reference": device_ref}
    return {"resource": resource, "request": {"method": "POST", "url": "Observation"}}


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def stored(env: Env, *rids: uuid.UUID) -> int:
    return int(env.sql("select count(*) from readings where reading_id = any(%s)", (list(rids),))[0][0])


def gateway_audit(env: Env, gateway_id: str) -> list[tuple]:
    return env.sql(
        "select actor_role, outcome, patient_id, resource, action from audit_events where actor_username = %s"
        " order by id",
        (f"gateway:{gateway_id}",),
    )


@pytest.fixture(scope="module")
def gw1(fhir_env: Env) -> str:
    """gw-f1 (bound to p1, holds device1) with a fresh broker secret."""
    return enroll(fhir_env, "gw-f1", fhir_env.seeded.p1)


def test_own_patient_imports_through_own_device(fhir_env: Env, gw1: str) -> None:
    env = fhir_env
    rid = uuid.uuid4()
    device = {
        "fullUrl": "urn:uuid:6c7d0e52-0000-4000-8000-000000000001",
        "resource": {"resourceType": "Device", "identifier": [{"system": BT, "value": "AA:BB:CC:00:00:01"}]},
        "request": {"method": "POST", "url": "Device"},
    }
    doc = bundle("transaction", device, heart_rate(env.seeded.p1, rid, device["fullUrl"]))
    r = httpx.post(f"{env.url}/fhir/r4", json=doc, headers=basic("gw-f1", gw1))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    answer = r.json()
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["200 OK", "201 Created"]
    assert env.sql("select patient_id, device_id from readings where reading_id = %s", (rid,)) == [
        (env.seeded.p1, env.device1)
    ]
    rows = gateway_audit(env, "gw-f1")
    assert ("gateway", "allowed", env.seeded.p1, "POST /fhir/r4", "write") in rows
    # replay: the same bundle again is a no-op, still accepted (the cached PBKDF2 result serves the second call)
    r = httpx.post(f"{env.url}/fhir/r4", json=doc, headers=basic("gw-f1", gw1))
    assert [e["response"]["status"] for e in r.json()["entry"]] == ["200 OK", "200 OK"]
    assert stored(env, rid) == 1


def test_other_patient_transaction_is_refused_per_entry_and_writes_nothing(fhir_env: Env, gw1: str) -> None:
    env = fhir_env
    own, other = uuid.uuid4(), uuid.uuid4()
    doc = bundle("transaction", heart_rate(env.seeded.p1, own), heart_rate(env.seeded.p2, other))
    r = httpx.post(f"{env.url}/fhir/r4", json=doc, headers=basic("gw-f1", gw1))
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert [(i["code"], i["expression"]) for i in body["issue"]] == [
        ("forbidden", ["Bundle.entry[1].resource.subject"])
    ]
    assert "gw-f1" in body["issue"][0]["diagnostics"]
    assert stored(env, own, other) == 0
    rows = gateway_audit(env, "gw-f1")
    assert ("gateway", "denied", env.seeded.p2, "POST /fhir/r4", "write") in rows


def test_other_patient_batch_entry_answers_403_and_keeps_the_own(fhir_env: Env, gw1: str) -> None:
    env = fhir_env
    own, other = uuid.uuid4(), uuid.uuid4()
    doc = bundle("batch", heart_rate(env.seeded.p1, own), heart_rate(env.seeded.p2, other))
    r = httpx.post(f"{env.url}/fhir/r4", json=doc, headers=basic("gw-f1", gw1))
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created", "403 Forbidden"]
    assert entries[1]["response"]["outcome"]["issue"][0]["code"] == "forbidden"
    assert stored(env, own) == 1
    assert stored(env, other) == 0


def test_device_of_another_gateway_is_not_usable(fhir_env: Env, gw1: str) -> None:
    """device2 is enrolled on gw-f2 (patient 2); even pointed at by Device/<id> gw-f1 cannot write through it."""
    env = fhir_env
    rid = uuid.uuid4()
    env.sql("insert into gateways (id, patient_id) values ('gw-f3', %s) on conflict do nothing", (env.seeded.p1,))
    dev = env.sql(
        "insert into devices (gateway_id, address, kind) values ('gw-f3', 'AA:BB:CC:00:00:09', 'scale') returning id"
    )[0][0]
    doc = bundle("transaction", heart_rate(env.seeded.p1, rid, f"Device/{dev}"))
    r = httpx.post(f"{env.url}/fhir/r4", json=doc, headers=basic("gw-f1", gw1))
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.device"]
    assert stored(env, rid) == 0
    # a user on the care team may reference that device (the restriction is the gateway's)
    r = httpx.post(f"{env.url}/fhir/r4", json=doc, headers=env.headers("doctor"))
    assert r.status_code == 200, r.text


def test_wrong_secret_and_malformed_credentials_answer_401(fhir_env: Env, gw1: str) -> None:
    env = fhir_env
    rid = uuid.uuid4()
    doc = bundle("transaction", heart_rate(env.seeded.p1, rid))
    for headers in (
        basic("gw-f1", gw1 + "x"),
        basic("gw-nobody", gw1),
        {"Authorization": "Basic !!!"},
        {"Authorization": "Basic " + base64.b64encode(b"gw-f1").decode()},
    ):
        r = httpx.post(f"{env.url}/fhir/r4", json=doc, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["issue"][0]["code"] == "login"
        assert "Basic" in r.headers["www-authenticate"]
    assert stored(env, rid) == 0
    assert ("gateway", "denied", None, "POST /fhir/r4", "write") in gateway_audit(env, "gw-f1")


def test_revoked_and_rekeyed_credentials_are_refused_at_once(fhir_env: Env) -> None:
    env = fhir_env
    env.sql("insert into gateways (id, patient_id) values ('gw-f4', %s) on conflict do nothing", (env.seeded.p1,))
    secret = enroll(env, "gw-f4", env.seeded.p1)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    r = httpx.post(
        f"{env.url}/fhir/r4",
        json=bundle("transaction", heart_rate(env.seeded.p1, first)),
        headers=basic("gw-f4", secret),
    )
    assert r.status_code == 200, r.text  # the secret is now in the verification cache
    new_secret = enroll(env, "gw-f4", env.seeded.p1)
    r = httpx.post(
        f"{env.url}/fhir/r4",
        json=bundle("transaction", heart_rate(env.seeded.p1, second)),
        headers=basic("gw-f4", secret),
    )
    assert r.status_code == 401, r.text
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        revoke_gateway(conn, "gw-f4")
    r = httpx.post(
        f"{env.url}/fhir/r4",
        json=bundle("transaction", heart_rate(env.seeded.p1, third)),
        headers=basic("gw-f4", new_secret),
    )
    assert r.status_code == 401, r.text
    assert stored(env, first, second, third) == 1


@pytest.mark.parametrize(
    "path",
    ["Observation?patient={p}", "Patient/{p}", "Patient/{p}/$everything", "Patient?_id={p}", "AuditEvent?patient={p}"],
)
def test_a_gateway_never_reads(fhir_env: Env, gw1: str, path: str) -> None:
    env = fhir_env
    url = f"{env.url}/fhir/r4/" + path.format(p=env.seeded.p1)
    r = httpx.get(url, headers=basic("gw-f1", gw1))
    assert r.status_code == 403, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["code"] == "forbidden"
    assert httpx.get(url, headers=basic("gw-f1", "wrong")).status_code == 401
    assert any(row[:2] == ("gateway", "denied") and row[4] == "read" for row in gateway_audit(env, "gw-f1"))
    assert httpx.get(f"{env.url}/fhir/r4/metadata", headers=basic("gw-f1", gw1)).status_code == 200


def test_verified_secrets_cache_keys_on_the_hash_and_expires() -> None:
    """The PBKDF2 result is reused only for the same stored hash, the same secret, and within its lifetime."""
    cache = VerifiedSecrets(ttl_s=10.0)
    h = hash_password("s3cret")
    assert cache.check("gw-1", h, "s3cret", now=0.0)
    assert not cache.check("gw-1", h, "other", now=1.0)
    assert not cache.check("gw-1", hash_password("new"), "s3cret", now=1.0)
    assert cache.check("gw-1", h, "s3cret", now=20.0)  # expired: verified again with PBKDF2, still right
