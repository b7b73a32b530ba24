"""Deterministic physiological models of home-monitored patients.

Contract: every function here is pure. `vitals_at(profile, scenario, t)` depends only on its arguments, where `t`
is either simulated seconds since `profile.start` or a timezone-aware datetime; the same seed gives the same series in
any order of calls (noise is value noise keyed by (seed, channel, knot index) through `random.Random`, never the global
generator).

Model, per patient: baseline (drawn from the seed) + circadian drift (local time of day: heart rate and blood pressure
dip at night, core temperature lowest around 04:00, meals raise glucose) + smooth noise + scenario effects, then the
correlations: +10 /min heart rate per Cel of fever, hypoxaemia below 94 % raises heart rate (1.2 /min per %) and
respiratory rate (0.6 /min per %), fever raises respiratory rate (2 /min per Cel).
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from devices.errors import SimulationError
from devices.sim.scenarios import SCENARIOS, Effects, Scenario

DEFAULT_START: Final = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
CGM_INTERVAL_S: Final = 300.0
"""CGM sensors report interstitial glucose every 5 minutes."""
_MEALS_H: Final = (7.5, 12.75, 19.5)
"""Local hours of meals (glucose excursions)."""


def rng(seed: int, *key: object) -> random.Random:
    """A generator keyed by (seed, *key): same key, same stream, independent of call order."""
    return random.Random(":".join(map(str, (seed, *key))))  # noqa: S311 - simulation, not security


@functools.lru_cache(maxsize=1 << 16)
def _knot(seed: int, channel: str, k: int) -> float:
    """Random knot value in [-1, 1] (cached: a pure function of its key)."""
    return rng(seed, channel, k).uniform(-1.0, 1.0)


def value_noise(seed: int, channel: str, t: float, period: float) -> float:
    """Smooth noise in [-1, 1]: cosine interpolation between random knots `period` seconds apart."""
    k = math.floor(t / period)
    a = _knot(seed, channel, k)
    b = _knot(seed, channel, k + 1)
    w = (1.0 - math.cos(math.pi * (t / period - k))) / 2.0
    return a + (b - a) * w


@dataclass(frozen=True, slots=True)
class PatientProfile:
    """Baseline physiology of one simulated patient."""

    patient_id: str
    seed: int
    age: int = 68
    sex: str = "female"
    height_m: float = 1.65
    weight_kg: float = 72.0
    heart_rate: float = 72.0
    systolic: float = 128.0
    diastolic: float = 78.0
    body_temperature: float = 36.8
    spo2: float = 97.0
    respiratory_rate: float = 15.0
    glucose_mg_dl: float = 100.0
    """Fasting plasma glucose."""
    utc_offset_min: int = 60
    """Patient's local time zone (circadian rhythm and device clocks)."""
    start: datetime = DEFAULT_START
    """Simulated instant at t = 0 (aware UTC)."""
    copd: bool = False
    diabetic: bool = False

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise SimulationError("PatientProfile.start must be timezone-aware")

    @classmethod
    def generate(cls, seed: int, index: int = 0, *, start: datetime = DEFAULT_START) -> PatientProfile:
        """A plausible adult patient drawn from (seed, index)."""
        r = rng(seed, "profile", index)
        sex = r.choice(("female", "male"))
        height = r.gauss(1.63 if sex == "female" else 1.76, 0.06)
        bmi = min(40.0, max(19.0, r.gauss(27.0, 4.0)))
        copd = r.random() < 0.3
        diabetic = r.random() < 0.3
        return cls(
            patient_id=f"sim-patient-{seed}-{index}",
            seed=seed * 1000 + index,
            age=r.randint(45, 88),
            sex=sex,
            height_m=round(height, 3),
            weight_kg=round(bmi * height * height, 1),
            heart_rate=round(r.gauss(72.0, 7.0), 1),
            systolic=round(r.gauss(130.0, 10.0), 1),
            diastolic=round(r.gauss(79.0, 6.0), 1),
            body_temperature=round(r.gauss(36.75, 0.15), 2),
            spo2=round(r.gauss(93.5, 0.8) if copd else r.gauss(97.3, 0.6), 1),
            respiratory_rate=round(r.gauss(17.0 if copd else 14.5, 1.5), 1),
            glucose_mg_dl=round(r.gauss(135.0, 15.0) if diabetic else r.gauss(92.0, 6.0), 1),
            utc_offset_min=60,
            start=start,
            copd=copd,
            diabetic=diabetic,
        )


@dataclass(frozen=True, slots=True)
class Vitals:
    """True physiological state at one instant (what an ideal sensor would read) plus device-usage flags."""

    at: datetime
    heart_rate: float
    pulse_rate: float
    spo2: float
    systolic: float
    diastolic: float
    mean_arterial_pressure: float
    body_temperature: float
    respiratory_rate: float
    weight_kg: float
    height_m: float
    bmi: float
    glucose_mg_dl: float
    perfusion_index: float
    irregular_rhythm: bool
    cuff_too_loose: bool
    oximeter_sensor_off: bool
    inadequate_signal: bool
    hr_strap_contact: bool


def elapsed_s(profile: PatientProfile, t: float | datetime) -> float:
    """Simulated seconds since `profile.start` for `t` given as seconds or as an aware datetime."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise SimulationError("naive datetime given to the simulator: use timezone-aware UTC")
        return (t - profile.start).total_seconds()
    return float(t)


def local_hour(profile: PatientProfile, t: float | datetime) -> float:
    """Local time of day in hours [0, 24) at `t`."""
    at = profile.start + timedelta(seconds=elapsed_s(profile, t), minutes=profile.utc_offset_min)
    return (at.hour * 3600 + at.minute * 60 + at.second + at.microsecond / 1e6) / 3600.0


def _circadian(hour: float, peak_hour: float) -> float:
    """Cosine in [-1, 1] peaking at `peak_hour`."""
    return math.cos(2.0 * math.pi * (hour - peak_hour) / 24.0)


def _meal_glucose(profile: PatientProfile, hour: float) -> float:
    """Postprandial excursion (mg/dL): gamma-like bump peaking ~45 min after each meal."""
    amplitude = 90.0 if profile.diabetic else 40.0
    total = 0.0
    for meal in _MEALS_H:
        dt = (hour - meal) % 24.0
        if dt < 4.0:
            x = dt / 0.75
            total += amplitude * x * math.exp(1.0 - x)
    return total


def _scenario_of(scenario: Scenario | str) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    try:
        return SCENARIOS[scenario]
    except KeyError:
        raise SimulationError(f"unknown scenario {scenario!r}") from None


def glucose_at(profile: PatientProfile, scenario: Scenario | str, t: float | datetime) -> float:
    """Plasma glucose (mg/dL) at `t`."""
    s = elapsed_s(profile, t)
    eff = _scenario_of(scenario).effects(s)
    hour = local_hour(profile, s)
    noise = 6.0 * value_noise(profile.seed, "glucose", s, 1200.0)
    return max(40.0, profile.glucose_mg_dl + _meal_glucose(profile, hour) + noise + eff.glucose)


def cgm_glucose_at(profile: PatientProfile, scenario: Scenario | str, t: float | datetime) -> float:
    """Interstitial glucose (mg/dL) as a CGM reads it: plasma glucose 8 minutes earlier plus sensor noise."""
    s = elapsed_s(profile, t)
    sensor_noise = 3.0 * value_noise(profile.seed, "cgm", s, CGM_INTERVAL_S)
    return max(40.0, glucose_at(profile, scenario, s - 480.0) + sensor_noise)


def vitals_at(profile: PatientProfile, scenario: Scenario | str, t: float | datetime) -> Vitals:
    """The patient's vital signs at `t` (seconds since `profile.start` or aware datetime)."""
    s = elapsed_s(profile, t)
    eff: Effects = _scenario_of(scenario).effects(s)
    hour = local_hour(profile, s)
    seed = profile.seed

    def n(channel: str, period: float) -> float:
        return value_noise(seed, channel, s, period)

    temp = profile.body_temperature + 0.3 * _circadian(hour, 18.0) + 0.08 * n("temp", 600.0) + eff.body_temperature
    fever = max(0.0, temp - (profile.body_temperature + 0.3 * _circadian(hour, 18.0)))
    spo2 = min(100.0, profile.spo2 + 0.8 * n("spo2", 45.0) + 0.4 * n("spo2f", 7.0) + eff.spo2)
    desat = max(0.0, 94.0 - spo2)
    hr = (
        profile.heart_rate
        + 6.0 * _circadian(hour, 15.0)
        + 3.0 * n("hr", 60.0)
        + 1.5 * n("hrf", 5.0)
        + 10.0 * fever
        + 1.2 * desat
        + eff.heart_rate
    )
    rr = profile.respiratory_rate + 1.0 * n("resp", 90.0) + 2.0 * fever + 0.6 * desat + eff.respiratory_rate
    sbp = profile.systolic + 8.0 * _circadian(hour, 14.0) + 4.0 * n("sbp", 300.0) + eff.systolic
    dbp = profile.diastolic + 5.0 * _circadian(hour, 14.0) + 3.0 * n("dbp", 300.0) + eff.diastolic
    dbp = min(dbp, sbp - 20.0)
    weight = profile.weight_kg + 0.4 * _circadian(hour, 20.0) + 0.15 * n("weight", 3600.0)
    perfusion = max(0.2, (2.5 + 1.0 * n("pi", 120.0)) * eff.perfusion_factor)
    return Vitals(
        at=profile.start + timedelta(seconds=s),
        heart_rate=max(30.0, hr),
        pulse_rate=max(30.0, hr + 0.5 * n("pulse", 3.0)),
        spo2=max(50.0, spo2),
        systolic=sbp,
        diastolic=dbp,
        mean_arterial_pressure=dbp + (sbp - dbp) / 3.0,
        body_temperature=temp,
        respiratory_rate=max(4.0, rr),
        weight_kg=weight,
        height_m=profile.height_m,
        bmi=weight / (profile.height_m * profile.height_m),
        glucose_mg_dl=glucose_at(profile, scenario, s),
        perfusion_index=perfusion,
        irregular_rhythm=eff.irregular_rhythm,
        cuff_too_loose=eff.cuff_too_loose,
        oximeter_sensor_off=eff.oximeter_sensor_off,
        inadequate_signal=eff.inadequate_signal,
        hr_strap_contact=eff.hr_strap_contact,
    )


def rr_intervals(
    profile: PatientProfile, scenario: Scenario | str, t: float | datetime, window_s: float = 1.0
) -> tuple[float, ...]:
    """RR intervals (seconds, oldest first) of the beats detected in the `window_s` seconds ending at `t`.

    Sinus rhythm: ~4 % variability with respiratory sinus arrhythmia; atrial fibrillation adds irregularly irregular
    variation (coefficient of variation ~0.2+). The count per window has the right mean (heart rate / 60 per second).
    """
    s = elapsed_s(profile, t)
    sc = _scenario_of(scenario)
    k = math.floor(s / window_s)
    r = rng(profile.seed, "rr", window_s, k)
    hr = vitals_at(profile, sc, s).heart_rate
    mean_rr = 60.0 / hr
    cv = 0.04 + sc.effects(s).rr_irregularity
    count = math.floor(window_s / mean_rr + r.random())
    out: list[float] = []
    for i in range(count):
        rsa = 0.03 * math.sin(2.0 * math.pi * (s + i * mean_rr) / 4.0)
        # AF: irregularly irregular (uniform spread); sinus: small gaussian HRV + respiratory sinus arrhythmia.
        factor = r.uniform(1.0 - 1.7 * cv, 1.0 + 1.7 * cv) if cv > 0.1 else 1.0 + r.gauss(0.0, cv) + rsa
        out.append(min(2.0, max(0.25, mean_rr * factor)))
    return tuple(out)


def vitals_series(
    profile: PatientProfile, scenario: Scenario | str, start_s: float, end_s: float, step_s: float
) -> list[Vitals]:
    """`vitals_at` sampled every `step_s` seconds in [start_s, end_s)."""
    if step_s <= 0:
        raise SimulationError("step_s must be > 0")
    count = max(0, math.ceil((end_s - start_s) / step_s))
    return [vitals_at(profile, scenario, start_s + i * step_s) for i in range(count)]
