"""PostgreSQL adapter of prescriptions (migration 0500): thin reads and writes of the domain values of :mod:`.model`.

The dispense path locks the prescription row (``get(..., lock=True)`` = ``select ... for update``) inside the caller's
transaction, so concurrent dispenses of one prescription are serialised and each sees the quantities the previous one
left; ``prescription_lines_not_over`` refuses over-dispensing even if a caller skipped the rules.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from teleconsult.prescriptions.model import (
    Allergy,
    Dispense,
    DispenseLine,
    Issue,
    Line,
    Party,
    Pharmacy,
    Prescription,
    Severity,
)
from teleconsult.prescriptions.rules import AcceptedLine

Conn = AsyncConnection[Any]

_RX_COLS: Final = (
    "id, series_id, version, replaces, superseded_by, patient_id, patient_name, patient_birth_date, prescriber_id, "
    "prescriber_name, prescriber_registration, consultation_id, issued_at, valid_until, note, warnings, signature, "
    "key_id, cancelled_at, cancelled_by, cancel_reason, revision, code_digest, code_sealed"
)
_LINE_COLS: Final = (
    "prescription_id, line_no, formulary_id, free_text, medicine, inn, atc, antibiotic, dose, dose_unit, "
    "times_per_day, duration_days, quantity, quantity_unit, repeats, instructions, substitution_allowed, valid_until, "
    "dispensed"
)


@dataclass(frozen=True, slots=True)
class Stored:
    """A prescription with its access-code digest and sealed copy."""

    rx: Prescription
    code_digest: bytes
    code_sealed: bytes


# --- people ---------------------------------------------------------------------------------------------------------


async def patient_party(conn: Conn, patient_id: uuid.UUID) -> Party | None:
    """Name and birth date of a patient, as printed."""
    cur = await conn.execute("select id, display_name, birth_date from patients where id = %s", (patient_id,))
    r = await cur.fetchone()
    return None if r is None else Party(id=r[0], display_name=r[1], birth_date=r[2])


async def user_party(conn: Conn, user_id: uuid.UUID) -> tuple[Party, str] | None:
    """``(party, role)`` of an account (display name, registration number)."""
    cur = await conn.execute(
        "select id, coalesce(nullif(display_name, ''), username), registration_number, role from users where id = %s",
        (user_id,),
    )
    r = await cur.fetchone()
    return None if r is None else (Party(id=r[0], display_name=r[1], registration_number=r[2]), r[3])


async def set_registration(conn: Conn, user_id: uuid.UUID, number: str) -> str | None:
    """Set a doctor's registration number; returns the account's role (None: no such account)."""
    cur = await conn.execute(
        "update users set registration_number = %s where id = %s and role = 'doctor' returning role", (number, user_id)
    )
    if await cur.fetchone() is not None:
        return "doctor"
    cur = await conn.execute("select role from users where id = %s", (user_id,))
    r = await cur.fetchone()
    return None if r is None else str(r[0])


# --- allergies ------------------------------------------------------------------------------------------------------


async def allergies(conn: Conn, patient_id: uuid.UUID) -> tuple[list[Allergy], datetime | None]:
    """The patient's allergy list and when it was last changed."""
    cur = await conn.execute("select allergies, updated_at from patient_allergies where patient_id = %s", (patient_id,))
    r = await cur.fetchone()
    if r is None:
        return [], None
    return [Allergy(a["substance"], a.get("atc"), a.get("note", "")) for a in r[0]], r[1]


async def save_allergies(conn: Conn, patient_id: uuid.UUID, items: list[Allergy], by: uuid.UUID) -> datetime:
    """Replace the allergy list."""
    doc = [{"substance": a.substance, "atc": a.atc, "note": a.note} for a in items]
    cur = await conn.execute(
        "insert into patient_allergies (patient_id, allergies, updated_at, updated_by) values (%s, %s, now(), %s) "
        "on conflict (patient_id) do update set allergies = excluded.allergies, updated_at = excluded.updated_at, "
        "updated_by = excluded.updated_by returning updated_at",
        (patient_id, Jsonb(doc), by),
    )
    r = await cur.fetchone()
    assert r is not None
    return r[0]  # type: ignore[no-any-return]


# --- prescriptions --------------------------------------------------------------------------------------------------


def _issue(d: dict[str, Any]) -> Issue:
    return Issue(d["code"], Severity(d["severity"]), d["message"], d.get("line_no"))


def _line(r: tuple[Any, ...]) -> Line:
    return Line(
        line_no=r[1], formulary_id=r[2], free_text=r[3], medicine=r[4], inn=r[5], atc=r[6], antibiotic=r[7],
        dose=float(r[8]), dose_unit=r[9], times_per_day=r[10], duration_days=r[11], quantity=r[12],
        quantity_unit=r[13], repeats=r[14], instructions=r[15], substitution_allowed=r[16], valid_until=r[17],
    )  # fmt: skip


def _stored(r: tuple[Any, ...], lines: list[tuple[Any, ...]]) -> Stored:
    birth: date | None = r[7]
    rx = Prescription(
        id=r[0], series_id=r[1], version=r[2], replaces=r[3], superseded_by=r[4],
        patient=Party(id=r[5], display_name=r[6], birth_date=birth),
        prescriber=Party(id=r[8], display_name=r[9], registration_number=r[10]),
        consultation_id=r[11], issued_at=r[12], valid_until=r[13], note=r[14],
        warnings=tuple(_issue(w) for w in r[15]), signature=bytes(r[16]), key_id=r[17],
        cancelled_at=r[18], cancelled_by=r[19], cancel_reason=r[20], revision=r[21],
        lines=tuple(_line(ln) for ln in lines), dispensed={ln[1]: ln[18] for ln in lines},
    )  # fmt: skip
    return Stored(rx=rx, code_digest=bytes(r[22]), code_sealed=bytes(r[23]))


async def insert(conn: Conn, rx: Prescription, code_digest: bytes, code_sealed: bytes) -> None:
    """Store an issued prescription and its lines (in the caller's transaction)."""
    warnings = [
        {"code": w.code, "severity": w.severity.value, "message": w.message, "line_no": w.line_no} for w in rx.warnings
    ]
    await conn.execute(
        f"insert into prescriptions ({_RX_COLS}) values ({', '.join(['%s'] * 24)})",  # noqa: S608
        (
            rx.id, rx.series_id, rx.version, rx.replaces, rx.superseded_by, rx.patient.id, rx.patient.display_name,
            rx.patient.birth_date, rx.prescriber.id, rx.prescriber.display_name, rx.prescriber.registration_number,
            rx.consultation_id, rx.issued_at, rx.valid_until, rx.note, Jsonb(warnings), rx.signature, rx.key_id,
            None, None, None, 0, code_digest, code_sealed,
        ),
    )  # fmt: skip
    async with conn.cursor() as cur:
        await cur.executemany(
            f"insert into prescription_lines ({_LINE_COLS}) values ({', '.join(['%s'] * 19)})",  # noqa: S608
            [
                (
                    rx.id, ln.line_no, ln.formulary_id, ln.free_text, ln.medicine, ln.inn, ln.atc, ln.antibiotic,
                    ln.dose, ln.dose_unit, ln.times_per_day, ln.duration_days, ln.quantity, ln.quantity_unit,
                    ln.repeats, ln.instructions, ln.substitution_allowed, ln.valid_until, 0,
                )
                for ln in rx.lines
            ],
        )  # fmt: skip


async def get(conn: Conn, prescription_id: uuid.UUID, *, lock: bool = False) -> Stored | None:
    """One prescription; ``lock`` takes its row lock (``for update``) for the caller's transaction."""
    cur = await conn.execute(
        f"select {_RX_COLS} from prescriptions where id = %s{' for update' if lock else ''}",  # noqa: S608
        (prescription_id,),
    )
    r = await cur.fetchone()
    if r is None:
        return None
    cur = await conn.execute(
        f"select {_LINE_COLS} from prescription_lines where prescription_id = %s order by line_no",  # noqa: S608
        (prescription_id,),
    )
    return _stored(r, await cur.fetchall())


async def list_for_patient(conn: Conn, patient_id: uuid.UUID, limit: int = 100) -> list[Prescription]:
    """The patient's prescriptions, newest first."""
    cur = await conn.execute(
        f"select {_RX_COLS} from prescriptions where patient_id = %s order by issued_at desc, id limit %s",  # noqa: S608
        (patient_id, limit),
    )
    rows = await cur.fetchall()
    if not rows:
        return []
    cur = await conn.execute(
        f"select {_LINE_COLS} from prescription_lines where prescription_id = any(%s) order by line_no",  # noqa: S608
        ([r[0] for r in rows],),
    )
    by_rx: dict[uuid.UUID, list[tuple[Any, ...]]] = defaultdict(list)
    for ln in await cur.fetchall():
        by_rx[ln[0]].append(ln)
    return [_stored(r, by_rx[r[0]]).rx for r in rows]


async def cancel(
    conn: Conn,
    prescription_id: uuid.UUID,
    *,
    by: uuid.UUID,
    reason: str,
    at: datetime,
    superseded_by: uuid.UUID | None = None,
) -> bool:
    """Record the cancellation (False if it was already cancelled)."""
    cur = await conn.execute(
        "update prescriptions set cancelled_at = %s, cancelled_by = %s, cancel_reason = %s, superseded_by = %s "
        "where id = %s and cancelled_at is null returning id",
        (at, by, reason, superseded_by, prescription_id),
    )
    return await cur.fetchone() is not None


# --- dispenses ------------------------------------------------------------------------------------------------------

_PHARMACY_COLS: Final = "ph.id, ph.name, ph.city, ph.address, ph.license_no"


def _pharmacy(r: tuple[Any, ...], at: int = 0) -> Pharmacy:
    return Pharmacy(id=r[at], name=r[at + 1], city=r[at + 2], address=r[at + 3], license_no=r[at + 4])


async def record_dispense(
    conn: Conn,
    rx: Prescription,
    accepted: list[AcceptedLine],
    *,
    pharmacy: Pharmacy,
    pharmacist_id: uuid.UUID,
    at: datetime,
) -> Dispense:
    """Write a dispense and add its quantities (caller holds the prescription's row lock, in a transaction)."""
    dispense_id = uuid.uuid4()
    await conn.execute(
        "insert into dispenses (id, prescription_id, pharmacy_id, pharmacist_id, at) values (%s, %s, %s, %s, %s)",
        (dispense_id, rx.id, pharmacy.id, pharmacist_id, at),
    )
    async with conn.cursor() as cur:
        await cur.executemany(
            "insert into dispense_lines (dispense_id, line_no, quantity, batch, dispensed_formulary_id, "
            "dispensed_medicine, substituted) values (%s, %s, %s, %s, %s, %s, %s)",
            [(dispense_id, a.line_no, a.quantity, a.batch, a.product_id, a.medicine, a.substituted) for a in accepted],
        )
        await cur.executemany(
            "update prescription_lines set dispensed = dispensed + %s where prescription_id = %s and line_no = %s",
            [(a.quantity, rx.id, a.line_no) for a in accepted],
        )
    await conn.execute("update prescriptions set revision = revision + 1 where id = %s", (rx.id,))
    lines = tuple(
        DispenseLine(a.line_no, a.quantity, a.batch, a.product_id, a.medicine, a.substituted) for a in accepted
    )
    return Dispense(dispense_id, rx.id, at, pharmacy, pharmacist_id, lines)


async def dispenses(
    conn: Conn,
    *,
    prescription_ids: list[uuid.UUID] | None = None,
    patient_id: uuid.UUID | None = None,
    limit: int = 500,
) -> list[Dispense]:
    """Dispenses of some prescriptions or of a patient, newest first."""
    cur = await conn.execute(
        f"select d.id, d.prescription_id, d.at, d.pharmacist_id, {_PHARMACY_COLS} from dispenses d "  # noqa: S608
        "join pharmacies ph on ph.id = d.pharmacy_id join prescriptions p on p.id = d.prescription_id "
        "where (%(ids)s::uuid[] is null or d.prescription_id = any(%(ids)s)) "
        "and (%(pid)s::uuid is null or p.patient_id = %(pid)s) order by d.at desc, d.id limit %(limit)s",
        {"ids": prescription_ids, "pid": patient_id, "limit": limit},
    )
    heads = await cur.fetchall()
    if not heads:
        return []
    cur = await conn.execute(
        "select dispense_id, line_no, quantity, batch, dispensed_formulary_id, dispensed_medicine, substituted "
        "from dispense_lines where dispense_id = any(%s) order by line_no",
        ([h[0] for h in heads],),
    )
    by_d: dict[uuid.UUID, list[DispenseLine]] = defaultdict(list)
    for r in await cur.fetchall():
        by_d[r[0]].append(DispenseLine(r[1], r[2], r[3], r[4], r[5], r[6]))
    return [Dispense(h[0], h[1], h[2], _pharmacy(h, 4), h[3], tuple(by_d[h[0]])) for h in heads]


# --- pharmacies -----------------------------------------------------------------------------------------------------


async def create_pharmacy(
    conn: Conn, *, name: str, city: str, address: str, license_no: str
) -> tuple[Pharmacy, datetime]:
    """A new pharmacy."""
    cur = await conn.execute(
        "insert into pharmacies (name, city, address, license_no) values (%s, %s, %s, %s) "
        "returning id, name, city, address, license_no, created_at",
        (name, city, address, license_no),
    )
    r = await cur.fetchone()
    assert r is not None
    return _pharmacy(r), r[5]


async def list_pharmacies(conn: Conn) -> list[tuple[Pharmacy, datetime]]:
    """All pharmacies by name."""
    cur = await conn.execute("select id, name, city, address, license_no, created_at from pharmacies order by name, id")
    return [(_pharmacy(r), r[5]) for r in await cur.fetchall()]


async def pharmacy_of(conn: Conn, user_id: uuid.UUID) -> Pharmacy | None:
    """The pharmacy a pharmacist account belongs to."""
    cur = await conn.execute(
        f"select {_PHARMACY_COLS} from users u join pharmacies ph on ph.id = u.pharmacy_id "  # noqa: S608
        "where u.id = %s and u.role = 'pharmacist'",
        (user_id,),
    )
    r = await cur.fetchone()
    return None if r is None else _pharmacy(r)


async def add_member(conn: Conn, pharmacy_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
    """Link a pharmacist account to a pharmacy; returns the account's role (None: no such account)."""
    cur = await conn.execute(
        "update users set pharmacy_id = %s where id = %s and role = 'pharmacist' returning role", (pharmacy_id, user_id)
    )
    if await cur.fetchone() is not None:
        return "pharmacist"
    cur = await conn.execute("select role from users where id = %s", (user_id,))
    r = await cur.fetchone()
    return None if r is None else str(r[0])


async def pharmacy_exists(conn: Conn, pharmacy_id: uuid.UUID) -> bool:
    """True if the pharmacy exists."""
    cur = await conn.execute("select 1 from pharmacies where id = %s", (pharmacy_id,))
    return await cur.fetchone() is not None


# --- wrong access codes ---------------------------------------------------------------------------------------------


async def code_failures(conn: Conn, user_id: uuid.UUID, since: datetime) -> tuple[int, datetime | None]:
    """Wrong codes of an account since ``since``, and the oldest of them."""
    cur = await conn.execute(
        "select count(*), min(at) from prescription_code_failures where user_id = %s and at >= %s", (user_id, since)
    )
    r = await cur.fetchone()
    assert r is not None
    return int(r[0]), r[1]


async def add_code_failure(conn: Conn, user_id: uuid.UUID, client_addr: str | None, at: datetime) -> None:
    """Count one wrong code (and forget this account's failures older than a day: the audit log keeps them)."""
    await conn.execute(
        "delete from prescription_code_failures where user_id = %s and at < %s", (user_id, at - timedelta(days=1))
    )
    await conn.execute(
        "insert into prescription_code_failures (user_id, client_addr, at) values (%s, %s, %s)",
        (user_id, client_addr, at),
    )
