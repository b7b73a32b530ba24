"""The prescription loop over HTTP on a real server and database: write, check, sign, print code, look up, dispense
(partly, concurrently, never twice), cancel, expire, tamper, patient and doctor views, audit."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx

from tests.teleconsult.prescriptions.conftest import RxEnv
from tests.teleconsult.prescriptions.helpers import AMOXICILLINE, PARACETAMOL, issue, line, line_json


def _create(env: RxEnv, lines: list[dict] | None = None, **extra) -> dict:
    body = {"lines": lines or [line_json()], **extra}
    r = env.call("POST", f"/patients/{env.seeded.p1}/prescriptions", "doctor", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _lookup(env: RxEnv, rx_id: str, code: str, who: str = "pharmacist") -> httpx.Response:
    return env.call("POST", "/pharmacy/lookup", who, json={"prescription_id": rx_id, "access_code": code})


def _dispense(env: RxEnv, rx_id: str, code: str, lines: list[dict], who: str = "pharmacist", **extra) -> httpx.Response:
    body = {"access_code": code, "lines": lines, **extra}
    return env.call("POST", f"/pharmacy/prescriptions/{rx_id}/dispense", who, json=body)


def test_issue_sign_and_read(rx_env: RxEnv) -> None:
    rx = _create(rx_env, [line_json(), line_json(AMOXICILLINE, dose_unit="gélule", quantity=1)])
    assert rx["status"] == "issued"
    assert rx["signature"] == {"algorithm": "Ed25519", "key_id": rx_env.keys.signer.key_id, "valid": True}
    assert len(rx["access_code"]) == 19
    assert rx["prescriber"]["registration_number"] == "INPE 112233445"
    amox = rx["lines"][1]
    assert amox["antibiotic"] is True
    issued = datetime.fromisoformat(rx["issued_at"])
    assert datetime.fromisoformat(amox["valid_until"]) - issued == timedelta(days=7)
    assert datetime.fromisoformat(rx["valid_until"]) - issued > timedelta(days=88)
    # the access code is stored only as an HMAC and a sealed copy
    row = rx_env.sql("select code_digest, code_sealed from prescriptions where id = %s", (rx["id"],))[0]
    assert rx["access_code"].replace("-", "").encode() not in bytes(row[0]) + bytes(row[1])
    # the patient and the care team read it; no access code in the read
    for who in ("patient", "nurse", "doctor2"):
        r = rx_env.call("GET", f"/prescriptions/{rx['id']}", who)
        assert r.status_code == 200, (who, r.text)
        assert "access_code" not in r.json()
    # prescriber and patient get the code again; a colleague and the nurse do not
    assert (
        rx_env.call("GET", f"/prescriptions/{rx['id']}/access-code", "patient").json()["access_code"]
        == rx["access_code"]
    )
    assert rx_env.call("GET", f"/prescriptions/{rx['id']}/access-code", "doctor").status_code == 200
    assert rx_env.call("GET", f"/prescriptions/{rx['id']}/access-code", "doctor2").status_code == 403
    assert rx_env.call("GET", f"/prescriptions/{rx['id']}/access-code", "nurse").status_code == 403
    assert rx_env.call("GET", f"/prescriptions/{rx['id']}", "patient2").status_code == 403
    assert rx_env.call("GET", f"/prescriptions/{rx['id']}", "pharmacist").status_code == 403


def test_checks_block_and_warn(rx_env: RxEnv) -> None:
    p1 = rx_env.seeded.p1
    r = rx_env.call(
        "PUT", f"/patients/{p1}/allergies", "nurse", json={"allergies": [{"substance": "x", "atc": "J01C"}]}
    )
    assert r.status_code == 200, r.text
    body = {"lines": [line_json(), line_json(PARACETAMOL, quantity=0), line_json(AMOXICILLINE, repeats=2)]}
    r = rx_env.call("POST", f"/patients/{p1}/prescriptions/check", "doctor", json=body)
    codes = {(i["code"], i["line_no"]) for i in r.json()["issues"]}
    assert {("duplicate_inn", 2), ("quantity_zero", 2), ("antibiotic_repeats", 3), ("allergy", 3)} <= codes
    r = rx_env.call("POST", f"/patients/{p1}/prescriptions", "doctor", json=body)
    assert r.status_code == 422
    assert r.json()["detail"]["code"] == "prescription_invalid"
    # warnings only (allergy): refused until acknowledged, then recorded
    body = {"lines": [line_json(AMOXICILLINE, dose_unit="gélule")]}
    r = rx_env.call("POST", f"/patients/{p1}/prescriptions", "doctor", json=body)
    assert r.status_code == 422
    assert [i["code"] for i in r.json()["detail"]["issues"] if i["severity"] == "warning"] == ["allergy"]
    rx = _create(rx_env, body["lines"], acknowledge_warnings=True)
    assert [w["code"] for w in rx["warnings"]] == ["allergy"]
    rx_env.call("PUT", f"/patients/{p1}/allergies", "nurse", json={"allergies": []})
    # only doctors write
    assert rx_env.call("POST", f"/patients/{p1}/prescriptions", "nurse", json=body).status_code == 403


def test_pharmacy_lookup_partial_dispense_and_patient_view(rx_env: RxEnv) -> None:
    rx = _create(rx_env, [line_json(quantity=2, repeats=1)])
    code = rx["access_code"]
    # wrong code and unknown id: the same 404
    wrong = _lookup(rx_env, rx["id"], "0000-0000-0000-0000")
    unknown = _lookup(rx_env, "00000000-0000-4000-8000-000000000000", code)
    assert wrong.status_code == unknown.status_code == 404
    assert wrong.json() == unknown.json()
    r = _dispense(rx_env, rx["id"], "0000-0000-0000-0000", [{"line_no": 1, "quantity": 1}])
    assert (r.status_code, r.json()) == (404, wrong.json())  # a wrong code dispenses nothing and says nothing
    assert rx_env.sql("select dispensed from prescription_lines where prescription_id = %s", (rx["id"],)) == [(0,)]
    seen = _lookup(rx_env, rx["id"], code.lower().replace("-", " "))
    assert seen.status_code == 200, seen.text
    view = seen.json()
    assert set(view["patient"]) == {"display_name", "birth_date"}
    assert "warnings" not in view
    assert "note" not in view
    assert view["signature"]["valid"] is True
    r = _dispense(rx_env, rx["id"], code, [{"line_no": 1, "quantity": 3}])
    assert r.status_code == 409
    assert r.json()["detail"]["code"] == "over_dispense"  # more than one fill at once
    r = _dispense(rx_env, rx["id"], code, [{"line_no": 1, "quantity": 1, "batch": "L2411A"}], expected_revision=0)
    assert r.status_code == 201, r.text
    assert r.json()["prescription"]["lines"][0]["remaining"] == 3
    assert r.json()["prescription"]["status"] == "partially_dispensed"
    r = _dispense(rx_env, rx["id"], code, [{"line_no": 1, "quantity": 1}], expected_revision=0)
    assert r.status_code == 409
    assert r.json()["detail"]["code"] == "stale"
    # the patient sees "partially dispensed"; the doctor sees the dispense event
    mine = rx_env.call("GET", f"/patients/{rx_env.seeded.p1}/prescriptions", "patient").json()
    assert next(p for p in mine if p["id"] == rx["id"])["status"] == "partially_dispensed"
    events = rx_env.call("GET", f"/patients/{rx_env.seeded.p1}/dispenses", "doctor").json()
    assert events[0]["prescription_id"] == rx["id"]
    assert events[0]["lines"][0]["batch"] == "L2411A"
    # audited: the lookups (denied and allowed) and the dispense
    rows = rx_env.sql(
        "select action, outcome from audit_events where detail->>'prescription_id' = %s order by id", (rx["id"],)
    )
    assert ("read", "denied") in rows
    assert ("read", "allowed") in rows
    assert ("dispense", "allowed") in rows
    assert ("dispense", "denied") in rows


def test_substitution_same_inn_only(rx_env: RxEnv) -> None:
    rx = _create(rx_env, [line_json(AMOXICILLINE, dose_unit="gélule", quantity=1)], acknowledge_warnings=True)
    other_inn = {"line_no": 1, "quantity": 1, "substitute_formulary_id": PARACETAMOL}
    r = _dispense(rx_env, rx["id"], rx["access_code"], [other_inn])
    assert r.status_code == 422
    assert r.json()["detail"]["code"] == "substitution_invalid"
    same_inn = {"line_no": 1, "quantity": 1, "substitute_formulary_id": "amoxicilline-1g-comprime"}
    r = _dispense(rx_env, rx["id"], rx["access_code"], [same_inn])
    assert r.status_code == 201, r.text
    assert r.json()["dispense"]["lines"][0]["substituted"] is True
    assert r.json()["prescription"]["status"] == "dispensed"
    r = _dispense(rx_env, rx["id"], rx["access_code"], [{"line_no": 1, "quantity": 1}])
    assert r.status_code == 409
    assert r.json()["detail"]["code"] == "already_dispensed"
    r = rx_env.call("POST", f"/prescriptions/{rx['id']}/cancel", "doctor", json={"reason": "trop tard"})
    assert r.status_code == 409
    assert r.json()["detail"]["code"] == "already_dispensed"


def test_two_pharmacies_at_once_exactly_one_wins(rx_env: RxEnv) -> None:
    for _ in range(3):
        rx = _create(rx_env, [line_json(quantity=2)])
        results: list[httpx.Response] = []
        barrier = threading.Barrier(2)

        def go(who: str, rx: dict = rx, barrier: threading.Barrier = barrier, results: list = results) -> None:
            barrier.wait()
            results.append(_dispense(rx_env, rx["id"], rx["access_code"], [{"line_no": 1, "quantity": 2}], who=who))

        threads = [threading.Thread(target=go, args=(w,)) for w in ("pharmacist", "pharmacist2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r.status_code for r in results) == [201, 409]
        loser = next(r for r in results if r.status_code == 409)
        assert loser.json()["detail"]["code"] == "already_dispensed"
        assert rx_env.sql("select dispensed from prescription_lines where prescription_id = %s", (rx["id"],)) == [(2,)]


def test_cancelled_and_expired_cannot_be_dispensed(rx_env: RxEnv) -> None:
    rx = _create(rx_env)
    r = rx_env.call("POST", f"/prescriptions/{rx['id']}/cancel", "doctor", json={"reason": "Erreur de posologie"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    again = rx_env.call("POST", f"/prescriptions/{rx['id']}/cancel", "doctor", json={"reason": "encore"})
    assert again.status_code == 409
    r = _dispense(rx_env, rx["id"], rx["access_code"], [{"line_no": 1, "quantity": 1}])
    assert r.status_code == 409
    assert r.json()["detail"]["code"] == "cancelled"
    assert _lookup(rx_env, rx["id"], rx["access_code"]).json()["status"] == "cancelled"
    # issued 100 days ago with the default validity (3 months): expired
    s = rx_env.seeded
    old_id, old_code = issue(
        s.dsn, rx_env.keys, s.p1, s.users["doctor"], [line()], now=datetime.now(UTC) - timedelta(days=100)
    )
    r = _dispense(rx_env, str(old_id), old_code, [{"line_no": 1, "quantity": 1}])
    assert r.status_code == 409
    assert r.json()["detail"]["code"] == "expired"
    assert rx_env.call("GET", f"/prescriptions/{old_id}", "patient").json()["status"] == "expired"


def test_revise_makes_a_new_version(rx_env: RxEnv) -> None:
    rx = _create(rx_env)
    r = rx_env.call("POST", f"/prescriptions/{rx['id']}/revise", "doctor", json={"lines": [line_json(quantity=1)]})
    assert r.status_code == 201, r.text
    new = r.json()
    assert (new["version"], new["replaces"], new["series_id"]) == (2, rx["id"], rx["series_id"])
    assert new["access_code"] != rx["access_code"]
    old = rx_env.call("GET", f"/prescriptions/{rx['id']}", "doctor").json()
    assert (old["status"], old["superseded_by"]) == ("cancelled", new["id"])
    r = rx_env.call("POST", f"/prescriptions/{rx['id']}/revise", "doctor", json={"lines": [line_json()]})
    assert r.status_code == 409
    assert r.json()["detail"]["code"] == "not_revisable"


def test_tampered_row_shows_invalid_and_is_not_dispensed(rx_env: RxEnv) -> None:
    rx = _create(rx_env, [line_json(quantity=1)])
    rx_env.sql("update prescription_lines set quantity = 9 where prescription_id = %s", (rx["id"],))
    view = rx_env.call("GET", f"/prescriptions/{rx['id']}", "doctor").json()
    assert view["signature"]["valid"] is False
    assert _lookup(rx_env, rx["id"], rx["access_code"]).json()["signature"]["valid"] is False
    r = _dispense(rx_env, rx["id"], rx["access_code"], [{"line_no": 1, "quantity": 1}])
    assert r.status_code == 409
    assert r.json()["detail"]["code"] == "signature_invalid"


def test_wrong_codes_are_rate_limited(rx_env: RxEnv) -> None:
    s = rx_env.seeded
    pid = s.add_user("rx-pharm-limit", "pharmacist")
    rx_env.sql("update users set pharmacy_id = (select pharmacy_id from users where id = %s) where id = %s",
               (s.users["pharmacist"], pid))  # fmt: skip
    from tests.teleconsult.api.helpers import login

    token = login(rx_env.url, "rx-pharm-limit")
    rx = _create(rx_env)
    statuses = []
    for _ in range(11):
        r = httpx.post(
            f"{rx_env.url}/api/v1/pharmacy/lookup",
            json={"prescription_id": rx["id"], "access_code": "1111-1111-1111-1111"},
            headers={"Authorization": f"Bearer {token}"},
        )
        statuses.append(r.status_code)
    assert statuses == [404] * 10 + [429]
    r = httpx.post(
        f"{rx_env.url}/api/v1/pharmacy/lookup",
        json={"prescription_id": rx["id"], "access_code": rx["access_code"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 429  # even the right code, until the window passes


def test_pharmacist_sees_no_patient_data(rx_env: RxEnv) -> None:
    p1 = rx_env.seeded.p1
    for path in (f"/patients/{p1}", f"/patients/{p1}/prescriptions", f"/patients/{p1}/allergies"):
        assert rx_env.call("GET", path, "pharmacist").status_code == 403, path
    assert rx_env.call("GET", "/pharmacy/me", "pharmacist").json()["pharmacy"]["name"].startswith("Pharmacie")
    assert rx_env.call("GET", "/pharmacy/me", "doctor").status_code == 403
