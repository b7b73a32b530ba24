"""Pure rules: validity, antibiotic rule, checks, remaining quantities and repeats, statuses, double dispense."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teleconsult.prescriptions import rules
from teleconsult.prescriptions.errors import InvalidDispenseError, PrescriptionConflictError
from teleconsult.prescriptions.formulary import load
from teleconsult.prescriptions.model import Allergy, Party, Prescription, Status
from tests.teleconsult.prescriptions.helpers import AMOXICILLINE, PARACETAMOL, line

T0 = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
F = load()


def _rx(drafts=None, *, issued_at=T0, dispensed=None, cancelled=False, validity_days=None) -> Prescription:
    result = rules.check(
        drafts or [line()], formulary=F, allergies=[], issued_at=issued_at, validity_days=validity_days
    )
    pid = uuid.uuid4()
    return Prescription(
        id=pid, series_id=pid, version=1, replaces=None, patient=Party(uuid.uuid4(), "P"),
        prescriber=Party(uuid.uuid4(), "Dr D", "INPE 1"), consultation_id=None, issued_at=issued_at,
        valid_until=result.valid_until, note="", lines=result.lines, signature=b"", key_id="k",
        cancelled_at=issued_at if cancelled else None, dispensed=dispensed or {},
    )  # fmt: skip


def _codes(issues) -> set[tuple[str, int | None]]:
    return {(i.code, i.line_no) for i in issues}


def test_default_validity_is_three_calendar_months_clipped() -> None:
    assert rules.prescription_valid_until(T0) == datetime(2026, 4, 30, 9, 0, tzinfo=UTC)
    assert rules.add_months(datetime(2026, 11, 30, tzinfo=UTC), 3) == datetime(2027, 2, 28, tzinfo=UTC)
    assert rules.prescription_valid_until(T0, 10) == T0 + timedelta(days=10)


def test_antibiotic_lines_expire_after_seven_days_and_cannot_repeat() -> None:
    rx = _rx([line(), line(AMOXICILLINE, dose_unit="gélule")])
    para, amox = rx.lines
    assert para.valid_until == rx.valid_until
    assert amox.valid_until == T0 + timedelta(days=7)
    with_repeats = rules.check(
        [line(AMOXICILLINE, repeats=1)], formulary=F, allergies=[], issued_at=T0, prescriber_registration="x"
    )
    assert ("antibiotic_repeats", 1) in _codes(with_repeats.errors)


def test_checks() -> None:
    drafts = [
        line(),
        line(PARACETAMOL, quantity=0),
        line("nope-1mg-x"),
        line(None, medicine="Tisane maison", dose=12, dose_unit="comprimé"),
        line("ibuprofene-400mg-comprime", times_per_day=10),
    ]
    r = rules.check(drafts, formulary=F, allergies=[], issued_at=T0, prescriber_registration=None)
    assert ("duplicate_inn", 2) in _codes(r.errors)
    assert ("quantity_zero", 2) in _codes(r.errors)
    assert ("unknown_formulary_id", 3) in _codes(r.errors)
    assert ("prescriber_registration_missing", None) in _codes(r.errors)
    assert {("dose_out_of_range", 4), ("dose_out_of_range", 5)} <= _codes(r.warnings)
    assert ("free_text", 4) in _codes(r.issues)
    assert r.lines[3].free_text
    assert all(i.message for i in r.issues)
    empty = rules.check([], formulary=F, allergies=[], issued_at=T0, prescriber_registration="x")
    assert [i.code for i in empty.errors] == ["no_lines"]


def test_allergy_by_inn_component_and_by_atc_class() -> None:
    combo = line("amoxicilline-acide-clavulanique-1g-125mg-comprime")
    by_inn = rules.check([combo], formulary=F, allergies=[Allergy("Amoxicilline")], issued_at=T0)
    assert ("allergy", 1) in _codes(by_inn.warnings)
    by_class = rules.check([line(AMOXICILLINE)], formulary=F, allergies=[Allergy("pénicillines", "J01C")], issued_at=T0)
    assert ("allergy", 1) in _codes(by_class.warnings)
    unrelated = rules.check([line()], formulary=F, allergies=[Allergy("pénicillines", "J01C")], issued_at=T0)
    assert not unrelated.warnings


def test_remaining_fill_and_repeats() -> None:
    ln = _rx([line(quantity=2, repeats=2)]).lines[0]
    assert ln.total == 6
    table = [(d, rules.remaining(ln, d), rules.fill_remaining(ln, d), rules.repeats_left(ln, d)) for d in range(7)]
    assert table == [(0, 6, 2, 2), (1, 5, 1, 2), (2, 4, 2, 1), (3, 3, 1, 1), (4, 2, 2, 0), (5, 1, 1, 0), (6, 0, 0, 0)]
    assert rules.remaining(ln, 9) == 0


def test_statuses() -> None:
    now = T0 + timedelta(days=1)
    assert rules.status(_rx(), now) is Status.ISSUED
    assert rules.status(_rx(dispensed={1: 1}), now) is Status.PARTIALLY_DISPENSED
    assert rules.status(_rx(dispensed={1: 2}), now) is Status.DISPENSED
    assert rules.status(_rx(cancelled=True, dispensed={1: 1}), now) is Status.CANCELLED
    assert rules.status(_rx(), T0 + timedelta(days=120)) is Status.EXPIRED
    assert rules.status(_rx(dispensed={1: 1}), T0 + timedelta(days=120)) is Status.EXPIRED
    assert rules.status(_rx(dispensed={1: 2}), T0 + timedelta(days=120)) is Status.DISPENSED


def test_dispense_validation() -> None:
    now = T0 + timedelta(days=1)
    rx = _rx([line(quantity=2, repeats=1), line(AMOXICILLINE, dose_unit="gélule", substitution_allowed=False)])
    ok = rules.validate_dispense(rx, [rules.DispenseRequest(1, 2, "L1")], now=now, formulary=F)
    assert [(a.line_no, a.quantity, a.substituted) for a in ok] == [(1, 2, False)]

    def conflict(requests, rx=rx, at=now, **kw) -> str:
        with pytest.raises(PrescriptionConflictError) as e:
            rules.validate_dispense(rx, requests, now=at, formulary=F, **kw)
        return e.value.code

    def invalid(requests, rx=rx) -> str:
        with pytest.raises(InvalidDispenseError) as e:
            rules.validate_dispense(rx, requests, now=now, formulary=F)
        return e.value.code

    assert conflict([rules.DispenseRequest(1, 3)]) == "over_dispense"  # one fill at a time
    assert conflict([rules.DispenseRequest(1, 1)], rx=replace(rx, dispensed={1: 4})) == "already_dispensed"
    assert conflict([rules.DispenseRequest(1, 2)], rx=replace(rx, dispensed={1: 3})) == "over_dispense"
    assert conflict([rules.DispenseRequest(1, 1)], rx=replace(rx, cancelled_at=now)) == "cancelled"
    assert conflict([rules.DispenseRequest(2, 1)], at=T0 + timedelta(days=8)) == "expired"
    assert conflict([rules.DispenseRequest(1, 1)], expected_revision=3) == "stale"
    substitute = rules.DispenseRequest(2, 1, substitute_formulary_id="amoxicilline-1g-comprime")
    assert conflict([substitute]) == "substitution_refused"
    other_inn = rules.DispenseRequest(1, 1, substitute_formulary_id="ibuprofene-400mg-comprime")
    assert invalid([other_inn]) == "substitution_invalid"
    assert invalid([rules.DispenseRequest(9, 1)]) == "unknown_line"
    assert invalid([rules.DispenseRequest(1, 1), rules.DispenseRequest(1, 1)]) == "duplicate_line"
    assert invalid([]) == "no_lines"


@given(
    quantity=st.integers(1, 5),
    repeats=st.integers(0, 3),
    attempts=st.lists(st.integers(1, 6), max_size=30),
)
def test_repeated_dispenses_never_exceed_the_total(quantity: int, repeats: int, attempts: list[int]) -> None:
    rx = _rx([line(quantity=quantity, repeats=repeats)])
    done = 0
    for q in attempts:
        try:
            rules.validate_dispense(
                replace(rx, dispensed={1: done}), [rules.DispenseRequest(1, q)], now=T0, formulary=F
            )
        except PrescriptionConflictError:
            continue
        done += q
    assert done <= quantity * (1 + repeats)
