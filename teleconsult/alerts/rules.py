"""Rule definitions of the alert engine (pure values and pure evaluation functions).

Threshold rules
- A rule has levels; a level is *entered* when ``value <= low`` or ``value >= high`` (inclusive edges, as clinical
  thresholds are charted). The severity is the highest entered level.
- Hysteresis: an active level is *kept* until the value is on the safe side of its band by more than ``hysteresis``
  (``value > low + hysteresis`` and ``value < high - hysteresis``). This applies to clearing and to downgrades.
- Minimum duration: a new condition must persist for ``min_duration`` of device time (``measured_at``) before the alert
  is raised; if no contrary reading arrives, the engine raises it when the duration has elapsed (timer).

Trend rules compare the newest value with the extreme of the values measured within ``window`` before it: a drop
(``change < 0``, e.g. SpO2 -4 points in 10 min) uses the maximum, a rise (e.g. weight +2 kg in 3 days) the minimum.

Per-patient configuration (:class:`PatientProfile`) overrides rules by name, sets SpO2 scale 2 and heart failure,
and the expected measurement interval per metric for the no-data rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from teleconsult.alerts.errors import AlertConfigError
from teleconsult.alerts.model import Severity, max_severity


@dataclass(frozen=True, slots=True)
class Level:
    """One band of a threshold rule."""

    severity: Severity
    low: float | None = None
    """Entered when the value is at or below this."""
    high: float | None = None
    """Entered when the value is at or above this."""

    def entered(self, value: float) -> bool:
        """The value is inside this band."""
        return (self.low is not None and value <= self.low) or (self.high is not None and value >= self.high)

    def kept(self, value: float, hysteresis: float) -> bool:
        """The value has not yet crossed back to the safe side by more than ``hysteresis``."""
        return (self.low is not None and value <= self.low + hysteresis) or (
            self.high is not None and value >= self.high - hysteresis
        )


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """Thresholds on one or more metrics (e.g. heart_rate and pulse_rate), in the metric's canonical unit."""

    name: str
    metrics: tuple[str, ...]
    levels: tuple[Level, ...]
    hysteresis: float = 0.0
    min_duration: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if self.hysteresis < 0 or self.min_duration < timedelta(0):
            raise AlertConfigError("hysteresis and min_duration must not be negative", rule=self.name)
        for level in self.levels:
            if level.low is None and level.high is None:
                raise AlertConfigError("a level needs low or high", rule=self.name)

    def evaluate(self, value: float, current: Severity | None) -> Severity | None:
        """The severity for ``value`` given the currently active one (hysteresis), or None when clear."""
        entered = max_severity(*(lv.severity for lv in self.levels if lv.entered(value)))
        if current is None:
            return entered
        kept = max_severity(
            *(lv.severity for lv in self.levels if lv.severity.rank <= current.rank and lv.kept(value, self.hysteresis))
        )
        return max_severity(entered, kept)


@dataclass(frozen=True, slots=True)
class TrendRule:
    """A change of at least ``change`` (signed) within ``window``; clears when the change is back below ``clear``."""

    name: str
    metric: str
    window: timedelta
    change: float
    clear: float
    severity: Severity = Severity.MEDIUM
    heart_failure_only: bool = False

    def __post_init__(self) -> None:
        if self.change == 0 or (self.change > 0) != (self.clear > 0) or abs(self.clear) > abs(self.change):
            raise AlertConfigError("change and clear must have the same sign and |clear| <= |change|", rule=self.name)

    def triggered(self, change: float, active: bool) -> bool:
        """Is the trend present for this change (with hysteresis when already active)?"""
        limit = self.clear if active else self.change
        return change <= limit if self.change < 0 else change >= limit


#: Defaults for home monitoring; patients override them by name.
DEFAULT_THRESHOLDS: Final[tuple[ThresholdRule, ...]] = (
    ThresholdRule(
        "spo2",
        ("spo2",),
        (Level(Severity.MEDIUM, low=92), Level(Severity.HIGH, low=88)),
        hysteresis=1,
        min_duration=timedelta(seconds=60),
    ),
    ThresholdRule(
        "heart_rate",
        ("heart_rate", "pulse_rate"),
        (Level(Severity.MEDIUM, low=45, high=120), Level(Severity.HIGH, low=40, high=140)),
        hysteresis=3,
        min_duration=timedelta(seconds=60),
    ),
    ThresholdRule(
        "systolic_bp",
        ("systolic_bp",),
        (Level(Severity.MEDIUM, low=90, high=180), Level(Severity.HIGH, low=80, high=220)),
        hysteresis=5,
    ),
    ThresholdRule(
        "body_temperature",
        ("body_temperature",),
        (Level(Severity.MEDIUM, low=35.5, high=38.5), Level(Severity.HIGH, low=35.0, high=39.5)),
        hysteresis=0.2,
    ),
    ThresholdRule(
        "glucose",
        ("glucose",),
        (Level(Severity.MEDIUM, low=70, high=250), Level(Severity.HIGH, low=54, high=400)),
        hysteresis=5,
    ),
)

DEFAULT_TRENDS: Final[tuple[TrendRule, ...]] = (
    TrendRule("spo2_falling", "spo2", timedelta(minutes=10), change=-4, clear=-2),
    TrendRule("weight_gain", "body_weight", timedelta(days=3), change=2.0, clear=1.5, heart_failure_only=True),
)

#: Engine metric names that feed NEWS2 parameters (pulse comes from either pulse source).
NEWS2_METRICS: Final[dict[str, str]] = {
    "respiratory_rate": "respiratory_rate",
    "spo2": "spo2",
    "supplemental_oxygen": "supplemental_oxygen",  # 1 on oxygen, 0 on air
    "systolic_bp": "systolic_bp",
    "pulse_rate": "pulse",
    "heart_rate": "pulse",
    "consciousness": "consciousness",  # 0 alert, 1 confusion, 2 voice, 3 pain, 4 unresponsive
    "body_temperature": "temperature",
}


@dataclass(frozen=True, slots=True)
class PatientProfile:
    """Per-patient configuration set by clinicians."""

    patient_id: str
    thresholds: Mapping[str, ThresholdRule] = field(default_factory=dict, hash=False)
    """Replaces the default rule of the same name; a rule with no levels disables it."""
    spo2_scale: int = 1
    """NEWS2 SpO2 scale 2 only when set here."""
    supplemental_oxygen: bool | None = None
    """Known oxygen status (e.g. on home oxygen); a ``supplemental_oxygen`` reading takes precedence."""
    heart_failure: bool = False
    """Enables heart-failure-only trend rules (weight gain)."""
    expected_intervals: Mapping[str, timedelta] = field(default_factory=dict, hash=False)
    """metric -> expected time between measurements (no-data rule)."""
    gateway_id: str | None = None
    """The patient's home gateway, if known before the first reading."""
    monitoring: bool = True
    """The remote-monitoring consent is in force. False: the engine raises no alert for the patient (no processing
    without consent; the store's profiles set it from the consents, ``teleconsult.security.consent``)."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine-wide settings."""

    thresholds: tuple[ThresholdRule, ...] = DEFAULT_THRESHOLDS
    trends: tuple[TrendRule, ...] = DEFAULT_TRENDS
    news2_freshness: timedelta = timedelta(hours=1)
    """Observations older than this are missing for NEWS2."""
    news2_enabled: bool = True
    no_data_grace: timedelta = timedelta(minutes=15)
    """Added to a metric's expected interval before "no data" is raised."""
    no_data_severity: Severity = Severity.LOW
    gateway_offline_after: timedelta = timedelta(minutes=5)
    """A gateway must be offline this long before its patients get a "gateway_offline" alert."""
    gateway_offline_severity: Severity = Severity.MEDIUM
    flush_grace: timedelta = timedelta(minutes=2)
    """After a gateway comes back, time for its outbox to deliver before "no data" is raised."""
    escalate_after: Mapping[Severity, timedelta] = field(
        default_factory=lambda: {Severity.HIGH: timedelta(minutes=5), Severity.MEDIUM: timedelta(minutes=15)},
        hash=False,
    )
    """Per severity: escalate when not acknowledged within this time (absent: never)."""

    def __post_init__(self) -> None:
        names = [r.name for r in self.thresholds] + [t.name for t in self.trends]
        reserved = {"news2", "gateway_offline"}
        if len(set(names)) != len(names) or reserved & set(names) or any(n.startswith("no_data:") for n in names):
            raise AlertConfigError("rule names must be unique and not reserved (news2, gateway_offline, no_data:*)")
