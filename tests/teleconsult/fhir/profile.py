"""Validation of emitted resources: fhir.resources (R4B models) + a profile check written here, from the spec.

The expected codes and units below are typed from the FHIR R4 vital-signs profile and REFERENCE.md, not imported from
the mapping code, so that a wrong table in the code cannot make its own test pass.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
VITAL_SIGNS = {
    # LOINC: (MDC codes allowed, UCUM unit)
    "8867-4": ({"147842", "149530", "149546"}, "/min"),
    "2708-6": ({"150456"}, "%"),
    "8310-5": ({"150364"}, "Cel"),
    "29463-7": ({"188736"}, "kg"),
    "8302-2": ({"188740"}, "cm"),  # R4 bodyheight: cm or [in_i]
    "39156-5": ({"188752"}, "kg/m2"),
    "9279-1": ({"151562"}, "/min"),
}
BP_COMPONENTS = {"8480-6": "150021", "8462-4": "150022", "8478-0": "150023"}

MODELS: dict[str, Any] = {
    "Observation": Observation,
    "Patient": Patient,
    "Device": Device,
    "Flag": Flag,
    "Bundle": Bundle,
    "OperationOutcome": OperationOutcome,
    "CapabilityStatement": CapabilityStatement,
    "AuditEvent": AuditEvent,
}


def parse(resource: dict[str, Any]) -> Any:
    """Parse with the R4B model of its type (raises on any invalid element)."""
    return MODELS[resource["resourceType"]].model_validate(resource)


def _codes(concept: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in concept["coding"]:
        assert c.get("code"), f"empty coding in {concept}"
        out.setdefault(c["system"], set()).add(c["code"])
    return out


def check_vital_sign(obs: dict[str, Any]) -> None:
    """The vital-signs profile as far as codes and units go."""
    cats = {c["code"] for cat in obs["category"] for c in cat["coding"]}
    assert "vital-signs" in cats
    assert obs["effectiveDateTime"].endswith("+00:00")
    codes = _codes(obs["code"])
    if "85354-9" in codes.get(LOINC, set()):
        assert "150020" in codes[MDC]
        comps = {next(iter(_codes(c["code"])[LOINC])): c for c in obs["component"]}
        assert {"8480-6", "8462-4"} <= set(comps)
        for loinc, comp in comps.items():
            assert BP_COMPONENTS[loinc] in _codes(comp["code"])[MDC]
            if "valueQuantity" in comp:
                q = comp["valueQuantity"]
                assert (q["system"], q["code"], q["unit"]) == (UCUM, "mm[Hg]", "mm[Hg]")
        assert "valueQuantity" not in obs
        return
    (loinc,) = codes[LOINC] - {"59408-5"}
    mdc_allowed, unit = VITAL_SIGNS[loinc]
    assert codes[MDC] & mdc_allowed, f"MDC code missing for {loinc}"
    q = obs["valueQuantity"]
    assert (q["system"], q["code"], q["unit"]) == (UCUM, unit, unit)


def check(resource: dict[str, Any]) -> int:
    """Parse ``resource`` (and every resource of a Bundle); profile-check vital signs. Returns how many were checked."""
    parse(resource)
    n = 1
    if resource["resourceType"] == "Bundle":
        for e in resource.get("entry", []):
            if "resource" in e:
                n += check(e["resource"])
            if "outcome" in e.get("response", {}):
                n += check(e["response"]["outcome"])
    elif resource["resourceType"] == "Observation":
        cats = {c["code"] for cat in resource["category"] for c in cat["coding"]}
        if "vital-signs" in cats:
            check_vital_sign(resource)
    return n
