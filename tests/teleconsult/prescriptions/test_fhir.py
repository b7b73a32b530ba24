"""MedicationRequest, MedicationDispense, Medication under /fhir/r4: validated with fhir.resources; care-team rules."""

from __future__ import annotations

import httpx
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.medicationrequest import MedicationRequest

from tests.teleconsult.prescriptions.conftest import RxEnv
from tests.teleconsult.prescriptions.helpers import AMOXICILLINE, line_json


def _fhir(env: RxEnv, path: str, who: str) -> httpx.Response:
    return httpx.get(f"{env.url}/fhir/r4/{path}", headers=env.h(who), timeout=30)


def test_medication_resources_validate(rx_env: RxEnv) -> None:
    p1 = rx_env.seeded.p1
    body = {
        "lines": [line_json(), line_json(AMOXICILLINE, dose_unit="gélule", quantity=1)],
        "acknowledge_warnings": True,
    }
    rx = rx_env.call("POST", f"/patients/{p1}/prescriptions", "doctor", json=body).json()
    d = rx_env.call(
        "POST",
        f"/pharmacy/prescriptions/{rx['id']}/dispense",
        "pharmacist",
        json={"access_code": rx["access_code"], "lines": [{"line_no": 2, "quantity": 1, "batch": "B7",
                                                          "substitute_formulary_id": "amoxicilline-1g-comprime"}]},
    )  # fmt: skip
    assert d.status_code == 201, d.text
    r = _fhir(rx_env, f"MedicationRequest/{rx['id']}-2", "doctor")
    assert r.status_code == 200, r.text
    mr = MedicationRequest.model_validate(r.json())
    assert mr.status == "completed"
    assert mr.dispenseRequest.quantity.value == 1
    assert mr.groupIdentifier.value == rx["id"]
    first = MedicationRequest.model_validate(_fhir(rx_env, f"MedicationRequest/{rx['id']}-1", "patient").json())
    assert first.status == "active"
    dispense_id = d.json()["dispense"]["id"]
    md = MedicationDispense.model_validate(_fhir(rx_env, f"MedicationDispense/{dispense_id}-2", "doctor").json())
    assert md.substitution.wasSubstituted is True
    assert md.authorizingPrescription[0].reference == f"MedicationRequest/{rx['id']}-2"
    for rtype in ("MedicationRequest", "MedicationDispense"):
        b = Bundle.model_validate(_fhir(rx_env, f"{rtype}?patient={p1}", "doctor").json())
        assert (b.total or 0) >= 1
        assert all(e.resource.__resource_type__ == rtype for e in b.entry)
    med = Medication.model_validate(_fhir(rx_env, "Medication/amoxicilline-500mg-gelule", "nurse").json())
    assert med.code.coding[0].code == "J01CA04"
    # pharmacists are not on care teams: no FHIR reads of patient data; unknown ids: 404 OperationOutcome
    assert _fhir(rx_env, f"MedicationRequest/{rx['id']}-1", "pharmacist").status_code == 403
    assert _fhir(rx_env, f"MedicationRequest/{rx['id']}-1", "patient2").status_code == 403
    missing = _fhir(rx_env, f"MedicationRequest/{rx['id']}-9", "doctor")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    meta = httpx.get(f"{rx_env.url}/fhir/r4/metadata", timeout=30).json()
    types = {r["type"] for r in meta["rest"][0]["resource"]}
    assert {"MedicationRequest", "MedicationDispense", "Medication"} <= types
