"""Domain values of prescriptions (frozen dataclasses; no I/O)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum


class Status(StrEnum):
    """Status of a prescription or of one of its lines."""

    ISSUED = "issued"
    PARTIALLY_DISPENSED = "partially_dispensed"
    DISPENSED = "dispensed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class Severity(StrEnum):
    """How an issue weighs: errors block, warnings block unless acknowledged, infos never block."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding of the checks, with a French message for the prescriber."""

    code: str
    severity: Severity
    message: str
    line_no: int | None = None


@dataclass(frozen=True, slots=True)
class Allergy:
    """A recorded allergy: a substance (DCI) and optionally an ATC prefix covering its class."""

    substance: str
    atc: str | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class LineDraft:
    """A line as the prescriber wrote it (formulary product or free text)."""

    formulary_id: str | None
    medicine: str | None
    dose: float
    dose_unit: str
    times_per_day: int
    duration_days: int
    quantity: int
    quantity_unit: str = "boîte"
    repeats: int = 0
    instructions: str = ""
    substitution_allowed: bool = True


@dataclass(frozen=True, slots=True)
class Line:
    """An issued line (frozen, part of the signed payload)."""

    line_no: int
    formulary_id: str | None
    free_text: bool
    medicine: str
    inn: str | None
    atc: str | None
    antibiotic: bool
    dose: float
    dose_unit: str
    times_per_day: int
    duration_days: int
    quantity: int
    quantity_unit: str
    repeats: int
    instructions: str
    substitution_allowed: bool
    valid_until: datetime

    @property
    def total(self) -> int:
        """Everything that may ever be dispensed: one fill per repeat plus the first."""
        return self.quantity * (1 + self.repeats)


@dataclass(frozen=True, slots=True)
class Party:
    """Prescriber or patient as printed and signed."""

    id: uuid.UUID
    display_name: str
    registration_number: str | None = None
    birth_date: date | None = None


@dataclass(frozen=True, slots=True)
class DispenseLine:
    """What one dispense handed over for one line."""

    line_no: int
    quantity: int
    batch: str | None
    dispensed_formulary_id: str | None
    dispensed_medicine: str
    substituted: bool


@dataclass(frozen=True, slots=True)
class Pharmacy:
    """A pharmacy (officine)."""

    id: uuid.UUID
    name: str
    city: str
    address: str = ""
    license_no: str = ""


@dataclass(frozen=True, slots=True)
class Dispense:
    """One dispense event (a MedicationDispense per line)."""

    id: uuid.UUID
    prescription_id: uuid.UUID
    at: datetime
    pharmacy: Pharmacy
    pharmacist_id: uuid.UUID | None
    lines: tuple[DispenseLine, ...]


@dataclass(frozen=True, slots=True)
class Prescription:
    """A stored prescription: the frozen signed part plus its later state (cancellation, dispensed quantities)."""

    id: uuid.UUID
    series_id: uuid.UUID
    version: int
    replaces: uuid.UUID | None
    patient: Party
    prescriber: Party
    consultation_id: uuid.UUID | None
    issued_at: datetime
    valid_until: datetime
    note: str
    lines: tuple[Line, ...]
    signature: bytes
    key_id: str
    warnings: tuple[Issue, ...] = ()
    cancelled_at: datetime | None = None
    cancelled_by: uuid.UUID | None = None
    cancel_reason: str | None = None
    superseded_by: uuid.UUID | None = None
    revision: int = 0
    dispensed: Mapping[int, int] = field(default_factory=dict)
    """line_no -> quantity dispensed so far."""

    def line(self, line_no: int) -> Line | None:
        """The line numbered ``line_no`` (1-based) or None."""
        return next((ln for ln in self.lines if ln.line_no == line_no), None)
