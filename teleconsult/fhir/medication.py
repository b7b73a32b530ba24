"""Prescriptions -> FHIR R4 ``MedicationRequest``, ``MedicationDispense``, ``Medication`` (pure, no I/O).

- Medication: ``id`` = formulary product id; code = ATC (``http://www.whocc.no/atc``) + the product in tbib's
  formulary CodeSystem; ``form`` text; the strength as text on ``ingredient`` (the DCI).
- MedicationRequest: one per prescription line, ``id`` = ``<prescription id>-<line no>``; ``groupIdentifier`` = the
  prescription id (the ordonnance), ``status`` from the line status, ``intent`` order, ``dosageInstruction`` with the
  French text and a timing (frequency per day, duration), ``dispenseRequest`` (quantity per fill, repeats =
  ``numberOfRepeatsAllowed``, validity period), ``substitution.allowedBoolean``. These (in "signed" form, before any
  dispense: status active) are what the server signs.
- MedicationDispense: one per line of a dispense, ``id`` = ``<dispense id>-<line no>``, ``authorizingPrescription`` the
  MedicationRequest, ``quantity``, the batch as an extension-free ``note``, ``substitution`` when a generic was given.
"""

from __future__ import annotations

from typing import Any, Final

from teleconsult.fhir import terminology as t
from teleconsult.fhir.observation import fhir_instant
from teleconsult.prescriptions.formulary import Product
from teleconsult.prescriptions.model import Dispense, DispenseLine, Line, Prescription, Status

ATC_SYSTEM: Final = "http://www.whocc.no/atc"
FORMULARY_SYSTEM: Final = f"{t.BASE}/CodeSystem/formulary"
PRESCRIPTION_SYSTEM: Final = f"{t.BASE}/sid/prescription-id"
ACT_CODE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

_PATIENT_PARAM: Final = [{"name": "patient", "type": "reference", "documentation": "Patient/<id> or <id> (required)"}]
#: The entries of these resources in the CapabilityStatement (routes: teleconsult/fhir/medication_api.py).
MEDICATION_CAPABILITIES: Final = (
    {
        "type": "MedicationRequest",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": _PATIENT_PARAM,
        "documentation": "one per prescription line (id <prescription id>-<line no>), signed by the server at issue",
    },
    {
        "type": "MedicationDispense",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": _PATIENT_PARAM,
        "documentation": "one per dispensed line (id <dispense id>-<line no>)",
    },
    {"type": "Medication", "interaction": [{"code": "read"}], "documentation": "products of tbib's formulary"},
)

_REQUEST_STATUS: Final = {
    Status.ISSUED: "active",
    Status.PARTIALLY_DISPENSED: "active",
    Status.DISPENSED: "completed",
    Status.EXPIRED: "stopped",
    Status.CANCELLED: "cancelled",
}


def request_id(prescription_id: object, line_no: int) -> str:
    """FHIR id of one line's MedicationRequest."""
    return f"{prescription_id}-{line_no}"


def medication_resource(p: Product) -> dict[str, Any]:
    """A formulary product as a FHIR ``Medication``."""
    return {
        "resourceType": "Medication",
        "id": p.id,
        "code": {
            "coding": [
                {"system": ATC_SYSTEM, "code": p.atc},
                {"system": FORMULARY_SYSTEM, "code": p.id, "display": p.label},
            ],
            "text": p.label,
        },
        "status": "active",
        "form": {"text": p.form},
        "ingredient": [{"itemCodeableConcept": {"text": f"{p.inn} {p.strength}"}, "isActive": True}],
    }


def _medication_concept(line: Line) -> dict[str, Any]:
    coding = []
    if line.atc:
        coding.append({"system": ATC_SYSTEM, "code": line.atc})
    if line.formulary_id:
        coding.append({"system": FORMULARY_SYSTEM, "code": line.formulary_id, "display": line.medicine})
    concept: dict[str, Any] = {"text": line.medicine}
    if coding:
        concept["coding"] = coding
    return concept


def dosage_text(line: Line) -> str:
    """``1 gélule 3 fois par jour pendant 7 jours — Pendant les repas``."""
    dose = f"{line.dose:g}".replace(".", ",")
    text = f"{dose} {line.dose_unit} {line.times_per_day} fois par jour pendant {line.duration_days} jours"
    return f"{text} — {line.instructions}" if line.instructions else text


def medication_request(rx: Prescription, line: Line, status: Status | None = None) -> dict[str, Any]:
    """One line as a MedicationRequest; ``status`` None gives the signed form (``active``, as issued)."""
    out: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": request_id(rx.id, line.line_no),
        "identifier": [{"system": PRESCRIPTION_SYSTEM, "value": f"{rx.id}/{line.line_no}"}],
        "groupIdentifier": {"system": PRESCRIPTION_SYSTEM, "value": str(rx.id)},
        "status": "active" if status is None else _REQUEST_STATUS[status],
        "intent": "order",
        "medicationCodeableConcept": _medication_concept(line),
        "subject": {"reference": f"Patient/{rx.patient.id}", "display": rx.patient.display_name},
        "authoredOn": fhir_instant(rx.issued_at),
        "requester": {"display": rx.prescriber.display_name, "identifier": {"value": str(rx.prescriber.id)}},
        "dosageInstruction": [
            {
                "sequence": 1,
                "text": dosage_text(line),
                "timing": {
                    "repeat": {
                        "frequency": line.times_per_day,
                        "period": 1,
                        "periodUnit": "d",
                        "boundsDuration": {
                            "value": line.duration_days,
                            "unit": "d",
                            "system": "http://unitsofmeasure.org",
                            "code": "d",
                        },
                    }
                },
                "doseAndRate": [{"doseQuantity": {"value": line.dose, "unit": line.dose_unit}}],
            }
        ],
        "dispenseRequest": {
            "validityPeriod": {"start": fhir_instant(rx.issued_at), "end": fhir_instant(line.valid_until)},
            "numberOfRepeatsAllowed": line.repeats,
            "quantity": {"value": line.quantity, "unit": line.quantity_unit},
        },
        "substitution": {"allowedBoolean": line.substitution_allowed},
    }
    if line.instructions:
        out["dosageInstruction"][0]["patientInstruction"] = line.instructions
    if rx.cancelled_at is not None and status is not None:
        out["statusReason"] = {"text": rx.cancel_reason or "annulée"}
    return out


def medication_dispense(rx: Prescription, d: Dispense, dl: DispenseLine) -> dict[str, Any]:
    """One line of a dispense as a MedicationDispense."""
    line = rx.line(dl.line_no)
    concept: dict[str, Any] = {"text": dl.dispensed_medicine}
    if dl.dispensed_formulary_id:
        concept["coding"] = [{"system": FORMULARY_SYSTEM, "code": dl.dispensed_formulary_id}]
    out: dict[str, Any] = {
        "resourceType": "MedicationDispense",
        "id": f"{d.id}-{dl.line_no}",
        "status": "completed",
        "medicationCodeableConcept": concept,
        "subject": {"reference": f"Patient/{rx.patient.id}"},
        "performer": [{"actor": {"display": f"{d.pharmacy.name}, {d.pharmacy.city}"}}],
        "authorizingPrescription": [{"reference": f"MedicationRequest/{request_id(rx.id, dl.line_no)}"}],
        "quantity": {"value": dl.quantity, "unit": line.quantity_unit if line else "boîte"},
        "whenHandedOver": fhir_instant(d.at),
        "substitution": {"wasSubstituted": dl.substituted},
    }
    if dl.substituted:
        out["substitution"]["type"] = {"coding": [{"system": ACT_CODE_SYSTEM, "code": "G", "display": "generic"}]}
    if dl.batch:
        out["note"] = [{"text": f"Lot {dl.batch}"}]
    return out


def signed_payload(rx: Prescription) -> dict[str, Any]:
    """What the server signs at issue (and recomputes to verify): frozen fields only, never later state."""
    return {
        "prescription": {
            "id": str(rx.id),
            "series_id": str(rx.series_id),
            "version": rx.version,
            "replaces": str(rx.replaces) if rx.replaces else None,
            "issued_at": fhir_instant(rx.issued_at),
            "valid_until": fhir_instant(rx.valid_until),
            "note": rx.note,
            "consultation_id": str(rx.consultation_id) if rx.consultation_id else None,
        },
        "prescriber": {
            "id": str(rx.prescriber.id),
            "display_name": rx.prescriber.display_name,
            "registration_number": rx.prescriber.registration_number,
        },
        "patient": {
            "id": str(rx.patient.id),
            "display_name": rx.patient.display_name,
            "birth_date": rx.patient.birth_date.isoformat() if rx.patient.birth_date else None,
        },
        "medication_requests": [medication_request(rx, ln) for ln in rx.lines],
    }
