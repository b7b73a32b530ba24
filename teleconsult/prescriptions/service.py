"""Issuing, revising, cancelling and dispensing: the rules of :mod:`.rules` applied on the database (:mod:`.store`).

Each function runs in the caller's connection; ``issue`` and ``dispense`` must be called inside a transaction
(``dispense`` locks the prescription row, so concurrent dispenses are serialised and each sees what the previous left).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from teleconsult.errors import NotFoundError
from teleconsult.fhir.medication import signed_payload
from teleconsult.prescriptions import codes, rules, store
from teleconsult.prescriptions.errors import InvalidPrescriptionError, PrescriptionConflictError
from teleconsult.prescriptions.formulary import Formulary
from teleconsult.prescriptions.model import Dispense, LineDraft, Pharmacy, Prescription, Status
from teleconsult.prescriptions.signing import Signer
from teleconsult.prescriptions.views import verify


@dataclass(frozen=True)
class Keys:
    """What signs prescriptions and protects their access codes."""

    signer: Signer
    secret: str
    """The server secret (``settings.secret_key``): keys the code digests and seals."""


@dataclass(frozen=True, slots=True)
class Draft:
    """A prescription as written."""

    lines: Sequence[LineDraft]
    validity_days: int | None = None
    note: str = ""
    consultation_id: uuid.UUID | None = None
    acknowledge_warnings: bool = False


async def check(
    conn: store.Conn,
    formulary: Formulary,
    *,
    patient_id: uuid.UUID,
    prescriber_id: uuid.UUID,
    draft: Draft,
    now: datetime,
) -> rules.CheckResult:
    """The checks of a draft against the patient's allergies and the prescriber's record."""
    allergies, _ = await store.allergies(conn, patient_id)
    prescriber = await store.user_party(conn, prescriber_id)
    return rules.check(
        draft.lines,
        formulary=formulary,
        allergies=allergies,
        issued_at=now,
        validity_days=draft.validity_days,
        prescriber_registration=prescriber[0].registration_number if prescriber else None,
    )


async def _consultation_of(conn: store.Conn, consultation_id: uuid.UUID, patient_id: uuid.UUID) -> None:
    cur = await conn.execute(
        "select 1 from consultations where id = %s and patient_id = %s", (consultation_id, patient_id)
    )
    if await cur.fetchone() is None:
        raise NotFoundError("consultation", consultation_id)


async def issue(
    conn: store.Conn,
    keys: Keys,
    formulary: Formulary,
    *,
    patient_id: uuid.UUID,
    prescriber_id: uuid.UUID,
    draft: Draft,
    now: datetime,
    replaces: Prescription | None = None,
) -> tuple[Prescription, str]:
    """Check, freeze, sign and store a prescription; returns it with its access code (never stored in clear)."""
    patient = await store.patient_party(conn, patient_id)
    prescriber = await store.user_party(conn, prescriber_id)
    if patient is None:
        raise NotFoundError("patient", patient_id)
    if prescriber is None:
        raise NotFoundError("user", prescriber_id)
    if draft.consultation_id is not None:
        await _consultation_of(conn, draft.consultation_id, patient_id)
    result = await check(conn, formulary, patient_id=patient_id, prescriber_id=prescriber_id, draft=draft, now=now)
    if result.errors:
        raise InvalidPrescriptionError(
            "L'ordonnance ne peut pas être émise : " + result.errors[0].message, result.issues
        )
    if result.warnings and not draft.acknowledge_warnings:
        raise InvalidPrescriptionError(
            "Avertissements à confirmer avant d'émettre l'ordonnance : " + result.warnings[0].message, result.issues
        )
    rx_id = uuid.uuid4()
    unsigned = Prescription(
        id=rx_id,
        series_id=replaces.series_id if replaces else rx_id,
        version=replaces.version + 1 if replaces else 1,
        replaces=replaces.id if replaces else None,
        patient=patient,
        prescriber=prescriber[0],
        consultation_id=draft.consultation_id,
        issued_at=now,
        valid_until=result.valid_until,
        note=draft.note,
        lines=result.lines,
        signature=b"",
        key_id=keys.signer.key_id,
        warnings=result.warnings,
    )
    rx = replace(unsigned, signature=keys.signer.sign(signed_payload(unsigned)))
    code = codes.generate()
    await store.insert(conn, rx, codes.digest(keys.secret, rx_id, code), codes.seal(keys.secret, rx_id, code))
    return rx, code


async def revise(
    conn: store.Conn, keys: Keys, formulary: Formulary, *, old_id: uuid.UUID, by: uuid.UUID, draft: Draft, now: datetime
) -> tuple[Prescription, str]:
    """A new version replacing ``old_id`` (which must be undispensed, not cancelled, not expired)."""
    stored = await store.get(conn, old_id, lock=True)
    if stored is None:
        raise NotFoundError("prescription", old_id)
    old = stored.rx
    if old.cancelled_at is not None or old.revision > 0 or rules.status(old, now) is not Status.ISSUED:
        raise PrescriptionConflictError(
            "not_revisable",
            "Seule une ordonnance émise et non délivrée peut être modifiée ; annulez-la et rédigez-en une nouvelle.",
        )
    new, code = await issue(
        conn, keys, formulary, patient_id=old.patient.id, prescriber_id=by, draft=draft, now=now, replaces=old
    )
    await store.cancel(
        conn, old.id, by=by, reason=f"remplacée par la version {new.version}", at=now, superseded_by=new.id
    )
    return new, code


async def cancel(conn: store.Conn, prescription_id: uuid.UUID, *, by: uuid.UUID, reason: str, now: datetime) -> None:
    """Cancel (already cancelled: 409)."""
    if not await store.cancel(conn, prescription_id, by=by, reason=reason, at=now):
        raise PrescriptionConflictError("already_cancelled", "Ordonnance déjà annulée.")


async def find_by_code(conn: store.Conn, keys: Keys, prescription_id: uuid.UUID, code_text: str) -> store.Stored | None:
    """The prescription if ``code_text`` is its access code (None for an unknown id or a wrong code alike)."""
    code = codes.normalize(code_text)
    stored = await store.get(conn, prescription_id)
    if code is None or stored is None or not codes.matches(keys.secret, prescription_id, code, stored.code_digest):
        return None
    return stored


async def dispense(
    conn: store.Conn,
    keys: Keys,
    formulary: Formulary,
    *,
    prescription_id: uuid.UUID,
    requests: Sequence[rules.DispenseRequest],
    pharmacy: Pharmacy,
    pharmacist_id: uuid.UUID,
    now: datetime,
    expected_revision: int | None = None,
) -> tuple[Dispense, Prescription]:
    """Lock, re-check, record (in a transaction, code already checked); returns the dispense and the new state."""
    stored = await store.get(conn, prescription_id, lock=True)
    if stored is None:
        raise NotFoundError("prescription", prescription_id)
    return await dispense_locked(
        conn, keys, formulary, stored.rx, requests=requests, pharmacy=pharmacy, pharmacist_id=pharmacist_id, now=now,
        expected_revision=expected_revision,
    )  # fmt: skip


async def dispense_locked(
    conn: store.Conn,
    keys: Keys,
    formulary: Formulary,
    rx: Prescription,
    *,
    requests: Sequence[rules.DispenseRequest],
    pharmacy: Pharmacy,
    pharmacist_id: uuid.UUID,
    now: datetime,
    expected_revision: int | None = None,
) -> tuple[Dispense, Prescription]:
    """:func:`dispense` for a prescription read with ``store.get(..., lock=True)`` in the caller's transaction."""
    if not verify(rx, keys.signer):
        raise PrescriptionConflictError(
            "signature_invalid", "Signature invalide : ordonnance altérée, ne pas délivrer. Contactez le prescripteur."
        )
    accepted = rules.validate_dispense(rx, requests, now=now, formulary=formulary, expected_revision=expected_revision)
    d = await store.record_dispense(conn, rx, accepted, pharmacy=pharmacy, pharmacist_id=pharmacist_id, at=now)
    dispensed = dict(rx.dispensed)
    for a in accepted:
        dispensed[a.line_no] = dispensed.get(a.line_no, 0) + a.quantity
    return d, replace(rx, dispensed=dispensed, revision=rx.revision + 1)
