"""JSON views of prescriptions for the REST API (pure): the care-team/patient view and the pharmacy view.

Field names and shapes are the ones documented in docs/prescriptions.md ("HTTP API").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from teleconsult.fhir.medication import signed_payload
from teleconsult.prescriptions import rules
from teleconsult.prescriptions.model import Dispense, Issue, Pharmacy, Prescription
from teleconsult.prescriptions.signing import ALGORITHM, Signer


def verify(rx: Prescription, signer: Signer) -> bool:
    """Recompute the signed payload from the stored record and check the signature."""
    return signer.verify(signed_payload(rx), rx.signature, rx.key_id)


def issue_json(i: Issue) -> dict[str, Any]:
    """An issue of the checks."""
    return {"code": i.code, "severity": i.severity.value, "line_no": i.line_no, "message": i.message}


def pharmacy_json(p: Pharmacy, *, full: bool = False) -> dict[str, Any]:
    """A pharmacy (``full`` adds address and licence number)."""
    out: dict[str, Any] = {"id": str(p.id), "name": p.name, "city": p.city}
    if full:
        out |= {"address": p.address, "license_no": p.license_no}
    return out


def dispense_json(d: Dispense, rx: Prescription | None = None) -> dict[str, Any]:
    """One dispense event (``rx`` adds each line's prescribed medicine)."""
    lines = []
    for dl in d.lines:
        item: dict[str, Any] = {
            "line_no": dl.line_no,
            "quantity": dl.quantity,
            "batch": dl.batch,
            "substituted": dl.substituted,
            "dispensed_formulary_id": dl.dispensed_formulary_id,
            "dispensed_medicine": dl.dispensed_medicine,
        }
        if rx is not None:
            line = rx.line(dl.line_no)
            item["medicine"] = line.medicine if line else None
        lines.append(item)
    return {
        "id": str(d.id),
        "at": d.at.isoformat(),
        "prescription_id": str(d.prescription_id),
        "pharmacy": pharmacy_json(d.pharmacy),
        "lines": lines,
    }


def prescription_json(
    rx: Prescription, *, now: datetime, signer: Signer, dispenses: list[Dispense], pharmacy: bool = False
) -> dict[str, Any]:
    """A prescription as the care team and the patient see it; ``pharmacy=True``: what a pharmacy may see."""
    lines = []
    for ln in rx.lines:
        done = rx.dispensed.get(ln.line_no, 0)
        lines.append(
            {
                "line_no": ln.line_no,
                "formulary_id": ln.formulary_id,
                "free_text": ln.free_text,
                "medicine": ln.medicine,
                "inn": ln.inn,
                "atc": ln.atc,
                "antibiotic": ln.antibiotic,
                "dose": ln.dose,
                "dose_unit": ln.dose_unit,
                "times_per_day": ln.times_per_day,
                "duration_days": ln.duration_days,
                "quantity": ln.quantity,
                "quantity_unit": ln.quantity_unit,
                "repeats": ln.repeats,
                "instructions": ln.instructions,
                "substitution_allowed": ln.substitution_allowed,
                "valid_until": ln.valid_until.isoformat(),
                "dispensed": done,
                "remaining": rules.remaining(ln, done),
                "fill_remaining": rules.fill_remaining(ln, done),
                "repeats_left": rules.repeats_left(ln, done),
                "status": rules.line_status(rx, ln, now).value,
            }
        )
    patient: dict[str, Any] = {
        "display_name": rx.patient.display_name,
        "birth_date": rx.patient.birth_date.isoformat() if rx.patient.birth_date else None,
    }
    out: dict[str, Any] = {
        "id": str(rx.id),
        "series_id": str(rx.series_id),
        "version": rx.version,
        "replaces": str(rx.replaces) if rx.replaces else None,
        "superseded_by": str(rx.superseded_by) if rx.superseded_by else None,
        "patient": patient if pharmacy else {"id": str(rx.patient.id), **patient},
        "prescriber": {
            "id": str(rx.prescriber.id),
            "display_name": rx.prescriber.display_name,
            "registration_number": rx.prescriber.registration_number,
        },
        "issued_at": rx.issued_at.isoformat(),
        "valid_until": rx.valid_until.isoformat(),
        "status": rules.status(rx, now).value,
        "cancelled_at": rx.cancelled_at.isoformat() if rx.cancelled_at else None,
        "cancelled_by": str(rx.cancelled_by) if rx.cancelled_by else None,
        "cancel_reason": rx.cancel_reason,
        "revision": rx.revision,
        "signature": {"algorithm": ALGORITHM, "key_id": rx.key_id, "valid": verify(rx, signer)},
        "lines": lines,
        "dispenses": [dispense_json(d) for d in dispenses],
    }
    if not pharmacy:
        out |= {
            "consultation_id": str(rx.consultation_id) if rx.consultation_id else None,
            "note": rx.note,
            "warnings": [issue_json(w) for w in rx.warnings],
        }
    return out
