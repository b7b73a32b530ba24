"""tbib patients, devices, gateways and open alerts -> FHIR R4 ``Patient``, ``Device``, ``Flag``; ``OperationOutcome``
(pure, no I/O). And back: an imported ``Device`` -> the identifiers that find the enrolled device.

- Patient: ``id`` = tbib patient uuid; identifiers: the tbib id (``urn:ietf:rfc:3986|urn:uuid:...``) and the
  business identifiers of ``patient_identifiers`` (CIN: :data:`~teleconsult.fhir.terminology.CIN_SYSTEM`).
- Device: ``id`` = device uuid; identifier = Bluetooth address (``http://hl7.org/fhir/sid/eui-48/bluetooth``),
  ``serialNumber``, ``modelNumber``, ``type`` = MDC device specialization when the kind is known, ``patient``,
  ``parent`` = the gateway, itself a Device with id ``gw.<gateway id>``.
- Flag: one per open (or acknowledged) alert, id = alert id, code = the rule in tbib's alert-rule CodeSystem.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from devices.codes import MDC_SYSTEM
from teleconsult.fhir import terminology as t
from teleconsult.fhir.errors import InvalidResourceError
from teleconsult.fhir.observation import fhir_instant
from teleconsult.fhir.records import AlertRecord, DeviceRecord, GatewayRecord, PatientRecord

GATEWAY_PREFIX: Final = "gw."
_FHIR_ID_RE: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_GENDER: Final = {"m": "male", "male": "male", "h": "male", "f": "female", "female": "female", "other": "other"}
_SEVERITY_DISPLAY: Final = {"low": "Low", "medium": "Medium", "high": "High"}


def is_fhir_id(value: str) -> bool:
    """True for a valid FHIR logical id."""
    return _FHIR_ID_RE.fullmatch(value) is not None


def gateway_device_id(gateway_id: str) -> str | None:
    """The Device id of a gateway (None when its id cannot be a FHIR id)."""
    fid = GATEWAY_PREFIX + gateway_id
    return fid if is_fhir_id(fid) else None


def patient_resource(p: PatientRecord) -> dict[str, Any]:
    """A tbib patient as a FHIR ``Patient``."""
    identifiers = [{"use": "secondary", "system": t.URI_SYSTEM, "value": f"urn:uuid:{p.id}"}]
    identifiers += [{"use": "official", "system": system, "value": value} for system, value in p.identifiers]
    out: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(p.id),
        "identifier": identifiers,
        "active": True,
        "name": [{"text": p.display_name}],
        "gender": _GENDER.get((p.sex or "").strip().lower(), "unknown"),
    }
    if p.birth_date is not None:
        out["birthDate"] = p.birth_date.isoformat()
    return out


def device_resource(d: DeviceRecord) -> dict[str, Any]:
    """An enrolled BLE device as a FHIR ``Device``."""
    out: dict[str, Any] = {
        "resourceType": "Device",
        "id": str(d.id),
        "identifier": [{"system": t.BLUETOOTH_SYSTEM, "value": d.address}],
        "status": "active",
    }
    if d.serial:
        out["serialNumber"] = d.serial
    if d.model:
        out["modelNumber"] = d.model
        out["deviceName"] = [{"name": d.model, "type": "model-name"}]
    if d.kind:
        known = t.DEVICE_KIND_MDC.get(d.kind)
        out["type"] = {"text": d.kind}
        if known is not None:
            out["type"]["coding"] = [t.coding(MDC_SYSTEM, str(known[0]), known[1])]
    if d.patient_id is not None:
        out["patient"] = {"reference": f"Patient/{d.patient_id}"}
    parent = gateway_device_id(d.gateway_id)
    if parent is not None:
        out["parent"] = {"reference": f"Device/{parent}"}
    return out


def gateway_resource(g: GatewayRecord) -> dict[str, Any]:
    """A home gateway as the parent ``Device`` of its BLE devices."""
    fid = gateway_device_id(g.id)
    if fid is None:
        raise ValueError(f"gateway id {g.id!r} cannot be a FHIR id")
    out: dict[str, Any] = {
        "resourceType": "Device",
        "id": fid,
        "identifier": [{"system": t.GATEWAY_SYSTEM, "value": g.id}],
        "status": "active",
        "deviceName": [{"name": "tbib home gateway", "type": "user-friendly-name"}],
        "type": {"text": "gateway"},
    }
    if g.patient_id is not None:
        out["patient"] = {"reference": f"Patient/{g.patient_id}"}
    return out


def flag_resource(a: AlertRecord) -> dict[str, Any]:
    """An alert that is not resolved as a FHIR ``Flag`` (active)."""
    severity = _SEVERITY_DISPLAY.get(a.severity, a.severity)
    return {
        "resourceType": "Flag",
        "id": str(a.id),
        "status": "active",
        "category": [{"coding": [t.coding(t.FLAG_CATEGORY_SYSTEM, "clinical", "Clinical")]}],
        "code": {
            "coding": [t.coding(t.ALERT_RULE_SYSTEM, a.rule), t.coding(t.ALERT_SEVERITY_SYSTEM, a.severity, severity)],
            "text": f"{a.rule} ({a.severity}, {a.state})",
        },
        "subject": {"reference": f"Patient/{a.patient_id}"},
        "period": {"start": fhir_instant(a.raised_at)},
    }


def outcome(issues: Iterable[tuple[str, str, str | None]], severity: str = "error") -> dict[str, Any]:
    """An ``OperationOutcome`` from ``(code, diagnostics, expression)`` issues."""
    out = []
    for code, diagnostics, expression in issues:
        issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
        if expression:
            issue["expression"] = [expression]
        out.append(issue)
    return {"resourceType": "OperationOutcome", "issue": out}


def information(text: str) -> dict[str, Any]:
    """A one-issue informational ``OperationOutcome``."""
    return outcome([("informational", text, None)], severity="information")


def device_identifiers(device: Mapping[str, Any], where: str) -> list[tuple[str, str]]:
    """The ``(system, value)`` identifiers of an imported ``Device`` (Bluetooth address, gateway, serial)."""
    if device.get("resourceType") != "Device":
        raise InvalidResourceError("resourceType must be Device", expression=f"{where}.resourceType")
    out: list[tuple[str, str]] = []
    idents = device.get("identifier") or []
    if not isinstance(idents, Sequence):
        raise InvalidResourceError("identifier must be a list", expression=f"{where}.identifier")
    for i in idents:
        if isinstance(i, Mapping) and isinstance(i.get("value"), str):
            out.append((str(i.get("system", "")), i["value"]))
    serial = device.get("serialNumber")
    if isinstance(serial, str):
        out.append(("serial", serial))
    if not out:
        raise InvalidResourceError(
            "the Device needs a Bluetooth address identifier or a serialNumber", expression=f"{where}.identifier"
        )
    return out
