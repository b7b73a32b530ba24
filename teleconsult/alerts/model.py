"""Values exchanged with the alert engine: readings in, alert events out.

Everything here is a frozen value; times are timezone-aware UTC datetimes. An alert is identified by its key
(patient, rule): the engine keeps at most one open alert per key (deduplication).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final

from teleconsult.alerts.errors import InvalidObservationError


class Severity(StrEnum):
    """Alert severity; ordered by :attr:`rank`."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """0 for low, 1 for medium, 2 for high."""
        return _RANK[self]


_RANK: Final[dict[Severity, int]] = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2}


def max_severity(*values: Severity | None) -> Severity | None:
    """The highest of ``values`` (``None`` is below every severity)."""
    best: Severity | None = None
    for v in values:
        if v is not None and (best is None or v.rank > best.rank):
            best = v
    return best


class EventKind(StrEnum):
    """What happened to an alert."""

    RAISED = "raised"
    UPDATED = "updated"
    """Severity changed while the alert stays open."""
    CLEARED = "cleared"
    """The condition is gone (the engine closes the alert)."""
    ESCALATED = "escalated"
    """Not acknowledged within the configured time: someone else must be told."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One measurement as the engine sees it (the columns of the ``readings`` table it needs)."""

    patient_id: str
    metric: str
    value: float
    unit: str
    measured_at: datetime
    device_id: str | None = None
    gateway_id: str | None = None


@dataclass(frozen=True, slots=True)
class AlertKey:
    """One open alert at most per key."""

    patient_id: str
    rule: str


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An engine output; ``details`` is JSON-ready (numbers, strings, lists, dicts; times as ISO strings)."""

    kind: EventKind
    key: AlertKey
    severity: Severity
    at: datetime
    details: Mapping[str, object] = field(default_factory=dict, hash=False)
    previous_severity: Severity | None = None


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An alert that is still open in the store, given back to a new engine at start (:meth:`Engine.restore`)."""

    key: AlertKey
    severity: Severity
    raised_at: datetime
    acknowledged: bool = False
    escalated: bool = False
    details: Mapping[str, object] = field(default_factory=dict, hash=False)


#: Unit conversions to the unit the rules are written in (UCUM codes).
_CONVERSIONS: Final[dict[tuple[str, str], tuple[str, float, float]]] = {
    # (metric, unit) -> (canonical unit, scale, offset): canonical = value * scale + offset
    ("body_temperature", "[degF]"): ("Cel", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    ("body_weight", "[lb_av]"): ("kg", 0.45359237, 0.0),
    ("glucose", "mmol/L"): ("mg/dL", 18.016, 0.0),
}


def normalized(reading: Reading) -> Reading:
    """``reading`` in the canonical unit of its metric (°C, kg, mg/dL); other units are kept as they are."""
    conv = _CONVERSIONS.get((reading.metric, reading.unit))
    if conv is None:
        return reading
    unit, scale, offset = conv
    return Reading(
        reading.patient_id,
        reading.metric,
        reading.value * scale + offset,
        unit,
        reading.measured_at,
        reading.device_id,
        reading.gateway_id,
    )


def check_time(name: str, value: datetime) -> None:
    """Refuse naive datetimes: every time in the engine is timezone-aware."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidObservationError(f"{name} must be timezone-aware, got {value!r}", field=name)
