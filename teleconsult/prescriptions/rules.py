"""The pure rules of prescriptions: checks when writing, validity, remaining quantities, statuses, dispense validation.

Validity: 3 calendar months from issue by default (or ``validity_days``, 1..365). **Antibiotic rule**: a line of a
systemic antibacterial (formulary flag: ATC J01 and oral metronidazole) must be dispensed within
:data:`ANTIBIOTIC_VALIDITY` (7 days) of issue and cannot be renewed (``repeats`` must be 0): an antibiotic course
starts now or needs a new consultation. Quantities: ``quantity`` per fill, ``1 + repeats`` fills, one fill at most
per dispense; nothing beyond the total is ever dispensed.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from teleconsult.prescriptions.errors import InvalidDispenseError, PrescriptionConflictError
from teleconsult.prescriptions.formulary import Formulary, Product, fold
from teleconsult.prescriptions.model import Allergy, Issue, Line, LineDraft, Prescription, Severity, Status

DEFAULT_VALIDITY_MONTHS: Final = 3
ANTIBIOTIC_VALIDITY: Final = timedelta(days=7)
MAX_LINES: Final = 20
MAX_TIMES_PER_DAY_SANE: Final = 6
MAX_QUANTITY_SANE: Final = 12

#: dose unit (folded) -> the largest plausible amount per intake
DOSE_LIMITS: Final[Mapping[str, float]] = {
    **dict.fromkeys(
        ("comprime", "comprimes", "gelule", "gelules", "capsule", "sachet", "sachets", "suppositoire", "ovule",
         "ampoule", "unidose", "stylo", "patch", "dispositif"),
        4,
    ),
    **dict.fromkeys(("bouffee", "bouffees", "dose", "doses", "pulverisation", "pulverisations", "application"), 4),
    **dict.fromkeys(("goutte", "gouttes"), 20),
    "ml": 30,
    "mg": 2000,
    "g": 4,
    "ug": 2000,
    "µg": 2000,
    "ui": 100_000,
    "cuillere a cafe": 3,
    "cuillere a soupe": 3,
    "cuillere-mesure": 3,
}  # fmt: skip


def add_months(at: datetime, months: int) -> datetime:
    """``at`` plus calendar months, the day clipped to the month's length (31 Jan + 1 month = 28/29 Feb)."""
    month0 = at.month - 1 + months
    year, month = at.year + month0 // 12, month0 % 12 + 1
    return at.replace(year=year, month=month, day=min(at.day, calendar.monthrange(year, month)[1]))


def prescription_valid_until(issued_at: datetime, validity_days: int | None = None) -> datetime:
    """End of validity of the prescription (exclusive)."""
    if validity_days is not None:
        return issued_at + timedelta(days=validity_days)
    return add_months(issued_at, DEFAULT_VALIDITY_MONTHS)


def line_valid_until(issued_at: datetime, rx_valid_until: datetime, *, antibiotic: bool) -> datetime:
    """End of validity of one line: the prescription's, shortened for antibiotics."""
    return min(rx_valid_until, issued_at + ANTIBIOTIC_VALIDITY) if antibiotic else rx_valid_until


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The issues found, and the lines as they would be issued (numbered, formulary resolved)."""

    issues: tuple[Issue, ...]
    lines: tuple[Line, ...]
    valid_until: datetime

    @property
    def errors(self) -> tuple[Issue, ...]:
        """Blocking issues."""
        return tuple(i for i in self.issues if i.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Issue, ...]:
        """Issues that need the prescriber's acknowledgement."""
        return tuple(i for i in self.issues if i.severity is Severity.WARNING)


def _resolve(no: int, d: LineDraft, product: Product | None, issued_at: datetime, rx_until: datetime) -> Line:
    antibiotic = product.antibiotic if product else False
    return Line(
        line_no=no,
        formulary_id=product.id if product else None,
        free_text=product is None,
        medicine=product.label if product else (d.medicine or "").strip(),
        inn=product.inn if product else None,
        atc=product.atc if product else None,
        antibiotic=antibiotic,
        dose=d.dose,
        dose_unit=d.dose_unit.strip(),
        times_per_day=d.times_per_day,
        duration_days=d.duration_days,
        quantity=d.quantity,
        quantity_unit=d.quantity_unit.strip() or "boîte",
        repeats=d.repeats,
        instructions=d.instructions.strip(),
        substitution_allowed=d.substitution_allowed,
        valid_until=line_valid_until(issued_at, rx_until, antibiotic=antibiotic),
    )


def _fmt(x: float) -> str:
    return f"{x:g}".replace(".", ",")


def _line_issues(line: Line, draft: LineDraft, allergies: Sequence[Allergy]) -> list[Issue]:
    n, out = line.line_no, []
    if line.quantity <= 0:
        out.append(Issue("quantity_zero", Severity.ERROR, f"Ligne {n} : la quantité doit être d'au moins 1.", n))
    limit = DOSE_LIMITS.get(fold(line.dose_unit))
    if line.dose <= 0 or (limit is not None and line.dose > limit):
        out.append(
            Issue(
                "dose_out_of_range",
                Severity.WARNING,
                f"Ligne {n} : {_fmt(line.dose)} {line.dose_unit} par prise sort de l'intervalle habituel"
                + (f" (au plus {_fmt(limit)})." if limit is not None else "."),
                n,
            )
        )
    if line.times_per_day > MAX_TIMES_PER_DAY_SANE:
        out.append(
            Issue("dose_out_of_range", Severity.WARNING, f"Ligne {n} : {line.times_per_day} prises par jour.", n)
        )
    if line.quantity > MAX_QUANTITY_SANE:
        out.append(
            Issue("dose_out_of_range", Severity.WARNING, f"Ligne {n} : {line.quantity} {line.quantity_unit}.", n)
        )
    if line.free_text:
        out.append(
            Issue("free_text", Severity.INFO, f"Ligne {n} : « {line.medicine} » hors formulaire (texte libre).", n)
        )
    if line.antibiotic:
        if line.repeats > 0:
            out.append(
                Issue("antibiotic_repeats", Severity.ERROR, f"Ligne {n} : un antibiotique ne se renouvelle pas.", n)
            )
        out.append(
            Issue(
                "antibiotic_validity",
                Severity.INFO,
                f"Ligne {n} : antibiotique, à délivrer dans les {ANTIBIOTIC_VALIDITY.days} jours.",
                n,
            )
        )
    for a in allergies:
        if allergy_matches(a, line):
            out.append(
                Issue(
                    "allergy",
                    Severity.WARNING,
                    f"Ligne {n} : allergie connue du patient à {a.substance}"
                    + (f" (classe ATC {a.atc})" if a.atc else "")
                    + f" — {line.medicine}.",
                    n,
                )
            )
    return out


def allergy_matches(allergy: Allergy, line: Line) -> bool:
    """Same DCI (a component of a combination counts), a word of the medicine, or an ATC code under the prefix."""
    substance = fold(allergy.substance)
    if substance:
        components = {fold(c) for c in (line.inn or "").split("+")}
        if substance in components or substance == fold(line.inn or "") or substance in fold(line.medicine).split():
            return True
    return bool(allergy.atc and line.atc and line.atc.upper().startswith(allergy.atc.upper()))


def check(
    drafts: Sequence[LineDraft],
    *,
    formulary: Formulary,
    allergies: Sequence[Allergy],
    issued_at: datetime,
    validity_days: int | None = None,
    prescriber_registration: str | None = "unchecked",
) -> CheckResult:
    """Every issue of a draft prescription, and its lines as they would be issued."""
    rx_until = prescription_valid_until(issued_at, validity_days)
    issues: list[Issue] = []
    if not drafts:
        issues.append(Issue("no_lines", Severity.ERROR, "L'ordonnance ne contient aucune ligne."))
    if len(drafts) > MAX_LINES:
        issues.append(Issue("no_lines", Severity.ERROR, f"Au plus {MAX_LINES} lignes par ordonnance."))
    if prescriber_registration is None or not prescriber_registration.strip():
        issues.append(
            Issue(
                "prescriber_registration_missing",
                Severity.ERROR,
                "Le numéro d'inscription du prescripteur (INPE) n'est pas renseigné.",
            )
        )
    lines: list[Line] = []
    seen: dict[str, int] = {}
    for no, d in enumerate(drafts, start=1):
        product = formulary.get(d.formulary_id) if d.formulary_id else None
        if d.formulary_id and product is None:
            issues.append(
                Issue("unknown_formulary_id", Severity.ERROR, f"Ligne {no} : produit {d.formulary_id} inconnu.", no)
            )
        if product is None and not (d.medicine or "").strip():
            issues.append(Issue("unknown_formulary_id", Severity.ERROR, f"Ligne {no} : médicament manquant.", no))
        line = _resolve(no, d, product, issued_at, rx_until)
        lines.append(line)
        issues.extend(_line_issues(line, d, allergies))
        key = fold(line.inn) if line.inn else fold(line.medicine)
        if key in seen:
            name = line.inn or line.medicine
            issues.append(
                Issue(
                    "duplicate_inn",
                    Severity.ERROR,
                    f"La DCI {name} figure deux fois (lignes {seen[key]} et {no}).",
                    no,
                )
            )
        else:
            seen[key] = no
    return CheckResult(issues=tuple(issues), lines=tuple(lines), valid_until=rx_until)


# --- state after issue --------------------------------------------------------------------------------------------


def remaining(line: Line, dispensed: int) -> int:
    """What can still be dispensed on the line (never negative)."""
    return max(0, line.total - dispensed)


def fill_remaining(line: Line, dispensed: int) -> int:
    """What is left of the current fill (the most one dispense may hand over is ``min(quantity, remaining)``)."""
    left = remaining(line, dispensed)
    if left == 0 or line.quantity <= 0:
        return 0
    return left - (left - 1) // line.quantity * line.quantity


def repeats_left(line: Line, dispensed: int) -> int:
    """Whole fills left after the current one."""
    left = remaining(line, dispensed)
    return 0 if left == 0 or line.quantity <= 0 else (left - 1) // line.quantity


def line_status(rx: Prescription, line: Line, now: datetime) -> Status:
    """Status of one line at ``now``."""
    done = rx.dispensed.get(line.line_no, 0)
    if remaining(line, done) == 0:
        return Status.DISPENSED
    if rx.cancelled_at is not None:
        return Status.CANCELLED
    if now >= line.valid_until:
        return Status.EXPIRED
    return Status.PARTIALLY_DISPENSED if done > 0 else Status.ISSUED


def status(rx: Prescription, now: datetime) -> Status:
    """Status of the prescription at ``now`` (cancelled wins; then dispensed, expired, partly, issued)."""
    if rx.cancelled_at is not None:
        return Status.CANCELLED
    states = [line_status(rx, ln, now) for ln in rx.lines]
    if all(s is Status.DISPENSED for s in states):
        return Status.DISPENSED
    if all(s in (Status.DISPENSED, Status.EXPIRED) for s in states):
        return Status.EXPIRED
    if any(rx.dispensed.get(ln.line_no, 0) > 0 for ln in rx.lines):
        return Status.PARTIALLY_DISPENSED
    return Status.ISSUED


@dataclass(frozen=True, slots=True)
class DispenseRequest:
    """One line of a dispense request."""

    line_no: int
    quantity: int
    batch: str | None = None
    substitute_formulary_id: str | None = None


@dataclass(frozen=True, slots=True)
class AcceptedLine:
    """A validated dispense line: what goes into the dispense record."""

    line_no: int
    quantity: int
    batch: str | None
    product_id: str | None
    medicine: str
    substituted: bool


def validate_dispense(
    rx: Prescription,
    requests: Iterable[DispenseRequest],
    *,
    now: datetime,
    formulary: Formulary,
    expected_revision: int | None = None,
) -> list[AcceptedLine]:
    """Check a dispense against the prescription's current state; raise the conflict or the invalid request."""
    if rx.cancelled_at is not None:
        raise PrescriptionConflictError("cancelled", "Ordonnance annulée : elle ne peut plus être délivrée.")
    if expected_revision is not None and expected_revision != rx.revision:
        raise PrescriptionConflictError(
            "stale", "L'ordonnance a été délivrée entre-temps : rechargez-la avant de délivrer."
        )
    reqs = list(requests)
    if not reqs:
        raise InvalidDispenseError("no_lines", "Aucune ligne à délivrer.")
    accepted, seen = [], set()
    for r in reqs:
        line = rx.line(r.line_no)
        if line is None:
            raise InvalidDispenseError("unknown_line", f"Ligne {r.line_no} inexistante.", r.line_no)
        if r.line_no in seen:
            raise InvalidDispenseError("duplicate_line", f"Ligne {r.line_no} indiquée deux fois.", r.line_no)
        seen.add(r.line_no)
        done = rx.dispensed.get(line.line_no, 0)
        left = remaining(line, done)
        if left == 0:
            raise PrescriptionConflictError("already_dispensed", f"Ligne {line.line_no} déjà délivrée.", line.line_no)
        if now >= line.valid_until:
            raise PrescriptionConflictError(
                "expired", f"Ligne {line.line_no} : validité dépassée, ne peut plus être délivrée.", line.line_no
            )
        if r.quantity <= 0:
            raise InvalidDispenseError("quantity_zero", f"Ligne {line.line_no} : quantité nulle.", line.line_no)
        if r.quantity > min(left, fill_remaining(line, done)):
            raise PrescriptionConflictError(
                "over_dispense",
                f"Ligne {line.line_no} : {r.quantity} demandé(s), au plus {fill_remaining(line, done)} "
                f"pour ce renouvellement ({left} restant(s) au total).",
                line.line_no,
            )
        product_id, medicine, substituted = line.formulary_id, line.medicine, False
        if r.substitute_formulary_id and r.substitute_formulary_id != line.formulary_id:
            substitute = formulary.get(r.substitute_formulary_id)
            original = formulary.get(line.formulary_id) if line.formulary_id else None
            if substitute is None or original is None or not formulary.same_inn(original, substitute):
                raise InvalidDispenseError(
                    "substitution_invalid",
                    f"Ligne {line.line_no} : la substitution doit être un produit de même DCI.",
                    line.line_no,
                )
            if not line.substitution_allowed:
                raise PrescriptionConflictError(
                    "substitution_refused", f"Ligne {line.line_no} : substitution non autorisée.", line.line_no
                )
            product_id, medicine, substituted = substitute.id, substitute.label, True
        accepted.append(AcceptedLine(line.line_no, r.quantity, r.batch, product_id, medicine, substituted))
    return accepted
