"""NEWS2 (National Early Warning Score 2, Royal College of Physicians 2017) as a pure function.

Contract
- :func:`score` takes :class:`Observations` (every parameter optional) and returns a :class:`News2Result`: the
  total, one integer component per *present* parameter, the sorted names of the missing ones, ``partial`` and the
  clinical risk.
- A missing parameter is never treated as normal: it has no component, it is listed in ``missing``, and the result is
  ``partial``. The total and the risk of a partial result are therefore lower bounds.
- Values are scored as they are charted on the NEWS2 chart: respiration rate, SpO2, systolic pressure and pulse are
  rounded to a whole number, temperature (°C) to one decimal, halves away from zero (``36.05`` → ``36.1`` → 0 points;
  ``20.5`` breaths/min → ``21`` → 2 points). Rounding uses the decimal representation of the value, so ``36.05``
  is a half even though the binary float is slightly below it.
- SpO2 scale 2 is used only when the caller sets it (a clinician's target of 88-92 %); it is never switched on here.
  On scale 2, a saturation of 93 % or more scores by air/oxygen: if that is missing, SpO2 cannot be scored and is listed
  as missing too (its component is absent).
- Risk: ``high`` if total ≥ 7, ``medium`` if 5-6, else ``low-medium`` if any single parameter scores 3, else ``low``.
- Implausible values (negative, SpO2 above 100 %, not finite, ...) raise :class:`InvalidObservationError` naming
  the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Final

from teleconsult.alerts.errors import InvalidObservationError

#: Component names, in chart order (also the JSON keys of ``components``).
PARAMETERS: Final[tuple[str, ...]] = (
    "respiratory_rate",
    "spo2",
    "air_or_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)

#: Plausibility limits (inclusive) of the numeric observations; outside them the value is an input error.
LIMITS: Final[dict[str, tuple[float, float]]] = {
    "respiratory_rate": (0.0, 120.0),
    "spo2": (0.0, 100.0),
    "systolic_bp": (0.0, 400.0),
    "pulse": (0.0, 350.0),
    "temperature": (20.0, 45.0),
}


class Consciousness(StrEnum):
    """ACVPU: alert, new confusion, voice, pain, unresponsive."""

    ALERT = "alert"
    CONFUSION = "confusion"
    VOICE = "voice"
    PAIN = "pain"
    UNRESPONSIVE = "unresponsive"


class Risk(StrEnum):
    """Clinical risk of a NEWS2 result (RCP 2017, chart 3)."""

    LOW = "low"
    LOW_MEDIUM = "low-medium"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class Observations:
    """One set of observations; ``None`` means not measured."""

    respiratory_rate: float | None = None
    """Breaths per minute."""
    spo2: float | None = None
    """Oxygen saturation in %."""
    supplemental_oxygen: bool | None = None
    """True on oxygen, False on air."""
    systolic_bp: float | None = None
    """Systolic blood pressure in mmHg."""
    pulse: float | None = None
    """Pulse rate per minute."""
    consciousness: Consciousness | None = None
    """ACVPU level."""
    temperature: float | None = None
    """Body temperature in °C."""
    spo2_scale: int = 1
    """1, or 2 when a clinician set a target range of 88-92 % for this patient."""


@dataclass(frozen=True, slots=True)
class News2Result:
    """A NEWS2 score; ``components`` holds only the scored parameters, in chart order."""

    total: int
    components: dict[str, int] = field(hash=False)
    missing: tuple[str, ...]
    partial: bool
    risk: Risk

    @property
    def any_three(self) -> bool:
        """A single parameter scores 3 (the "red score" trigger)."""
        return any(v == 3 for v in self.components.values())

    def to_json(self) -> dict[str, object]:
        """The JSON shape of ``tbib news2``."""
        return {
            "total": self.total,
            "components": dict(self.components),
            "missing": list(self.missing),
            "partial": self.partial,
            "risk": self.risk.value,
        }


def charted(value: float, decimals: int) -> Decimal:
    """``value`` rounded as charted: ``decimals`` places, halves away from zero, on its decimal representation."""
    return Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def _check(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidObservationError(f"{name} must be a number, not {value!r}", field=name)
    low, high = LIMITS[name]
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidObservationError(f"{name} = {value} is outside the plausible range {low:g}-{high:g}", field=name)


def respiratory_rate_points(rate: float) -> int:
    """≤8: 3, 9-11: 1, 12-20: 0, 21-24: 2, ≥25: 3."""
    r = charted(rate, 0)
    if r <= 8:
        return 3
    if r <= 11:
        return 1
    if r <= 20:
        return 0
    if r <= 24:
        return 2
    return 3


def spo2_scale1_points(spo2: float) -> int:
    """Scale 1: ≤91: 3, 92-93: 2, 94-95: 1, ≥96: 0 (oxygen is scored separately)."""
    s = charted(spo2, 0)
    if s <= 91:
        return 3
    if s <= 93:
        return 2
    if s <= 95:
        return 1
    return 0


def spo2_scale2_points(spo2: float, on_oxygen: bool | None) -> int | None:
    """Scale 2: ≤83: 3, 84-85: 2, 86-87: 1, 88-92 or ≥93 on air: 0, 93-94 / 95-96 / ≥97 on oxygen: 1 / 2 / 3.

    ``None`` when the saturation is ≥ 93 % and whether the patient is on oxygen is unknown.
    """
    s = charted(spo2, 0)
    if s <= 83:
        return 3
    if s <= 85:
        return 2
    if s <= 87:
        return 1
    if s <= 92:
        return 0
    if on_oxygen is None:
        return None
    if not on_oxygen:
        return 0
    if s <= 94:
        return 1
    if s <= 96:
        return 2
    return 3


def systolic_points(systolic: float) -> int:
    """≤90: 3, 91-100: 2, 101-110: 1, 111-219: 0, ≥220: 3."""
    s = charted(systolic, 0)
    if s <= 90:
        return 3
    if s <= 100:
        return 2
    if s <= 110:
        return 1
    if s <= 219:
        return 0
    return 3


def pulse_points(pulse: float) -> int:
    """≤40: 3, 41-50: 1, 51-90: 0, 91-110: 1, 111-130: 2, ≥131: 3."""
    p = charted(pulse, 0)
    if p <= 40:
        return 3
    if p <= 50:
        return 1
    if p <= 90:
        return 0
    if p <= 110:
        return 1
    if p <= 130:
        return 2
    return 3


def temperature_points(celsius: float) -> int:
    """≤35.0: 3, 35.1-36.0: 1, 36.1-38.0: 0, 38.1-39.0: 1, ≥39.1: 2 (one decimal, as charted)."""
    t = charted(celsius, 1)
    if t <= Decimal("35.0"):
        return 3
    if t <= Decimal("36.0"):
        return 1
    if t <= Decimal("38.0"):
        return 0
    if t <= Decimal("39.0"):
        return 1
    return 2


def consciousness_points(level: Consciousness) -> int:
    """Alert: 0; new confusion, voice, pain or unresponsive: 3."""
    return 0 if level is Consciousness.ALERT else 3


def risk_of(total: int, any_three: bool) -> Risk:
    """RCP 2017 clinical risk from the aggregate score and the single-parameter trigger."""
    if total >= 7:
        return Risk.HIGH
    if total >= 5:
        return Risk.MEDIUM
    if any_three:
        return Risk.LOW_MEDIUM
    return Risk.LOW


def score(obs: Observations) -> News2Result:
    """Score ``obs``; see the module docstring for missing parameters and rounding."""
    if obs.spo2_scale not in (1, 2):
        raise InvalidObservationError(f"spo2_scale must be 1 or 2, not {obs.spo2_scale!r}", field="spo2_scale")
    for name in LIMITS:
        value = getattr(obs, name)
        if value is not None:
            _check(name, value)
    if obs.consciousness is not None and not isinstance(obs.consciousness, Consciousness):
        raise InvalidObservationError(f"consciousness must be ACVPU, not {obs.consciousness!r}", field="consciousness")

    points: dict[str, int | None] = dict.fromkeys(PARAMETERS)
    if obs.respiratory_rate is not None:
        points["respiratory_rate"] = respiratory_rate_points(obs.respiratory_rate)
    if obs.spo2 is not None:
        if obs.spo2_scale == 2:
            points["spo2"] = spo2_scale2_points(obs.spo2, obs.supplemental_oxygen)
        else:
            points["spo2"] = spo2_scale1_points(obs.spo2)
    if obs.supplemental_oxygen is not None:
        points["air_or_oxygen"] = 2 if obs.supplemental_oxygen else 0
    if obs.systolic_bp is not None:
        points["systolic_bp"] = systolic_points(obs.systolic_bp)
    if obs.pulse is not None:
        points["pulse"] = pulse_points(obs.pulse)
    if obs.consciousness is not None:
        points["consciousness"] = consciousness_points(obs.consciousness)
    if obs.temperature is not None:
        points["temperature"] = temperature_points(obs.temperature)

    components = {name: p for name, p in points.items() if p is not None}
    missing = tuple(sorted(name for name, p in points.items() if p is None))
    total = sum(components.values())
    return News2Result(
        total=total,
        components=components,
        missing=missing,
        partial=bool(missing),
        risk=risk_of(total, any(v == 3 for v in components.values())),
    )
