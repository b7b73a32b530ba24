"""Physiological models and scenarios: determinism, plausibility, scenario windows, correlations."""

from __future__ import annotations

import itertools
import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from devices.errors import DevicesError, SimulationError
from devices.sim.physiology import (
    CGM_INTERVAL_S,
    PatientProfile,
    cgm_glucose_at,
    rr_intervals,
    vitals_at,
    vitals_series,
)
from devices.sim.scenarios import SCENARIOS, Scenario, get_scenario

SEEDS = (0, 1, 7, 42)


def _profile(seed: int = 7, index: int = 0) -> PatientProfile:
    return PatientProfile.generate(seed, index)


def test_same_seed_same_series_in_any_call_order() -> None:
    p = _profile()
    sc = get_scenario("sepsis", onset_s=30, speed=60)
    forward = [vitals_at(p, sc, t) for t in range(0, 600, 7)]
    backward = [vitals_at(p, sc, t) for t in reversed(range(0, 600, 7))][::-1]
    assert forward == backward
    assert forward == [vitals_at(_profile(), sc, t) for t in range(0, 600, 7)]
    assert [rr_intervals(p, sc, t) for t in range(50)] == [rr_intervals(p, sc, t) for t in range(50)]


def test_no_global_random_state_used() -> None:
    p = _profile()
    random.seed(1)
    a = vitals_series(p, "stable", 0, 300, 10)
    random.seed(2)
    random.random()
    assert vitals_series(p, "stable", 0, 300, 10) == a


def test_different_seeds_differ() -> None:
    a = vitals_at(_profile(1), "stable", 100)
    b = vitals_at(_profile(2), "stable", 100)
    assert a != b


def test_datetime_and_seconds_agree() -> None:
    p = _profile()
    at = p.start + timedelta(seconds=1234.5)
    assert vitals_at(p, "hypoxia", at) == vitals_at(p, "hypoxia", 1234.5)
    with pytest.raises(SimulationError):
        vitals_at(p, "stable", datetime(2026, 1, 1))


@pytest.mark.parametrize("seed", SEEDS)
def test_stable_values_are_plausible_over_a_day(seed: int) -> None:
    p = _profile(seed)
    for v in vitals_series(p, "stable", 0, 86_400, 600):
        assert 40 <= v.heart_rate <= 120
        assert 88 <= v.spo2 <= 100
        assert 90 <= v.systolic <= 180
        assert 50 <= v.diastolic < v.systolic
        assert v.diastolic < v.mean_arterial_pressure < v.systolic
        assert 35.5 <= v.body_temperature <= 37.8
        assert 8 <= v.respiratory_rate <= 26
        assert 50 <= v.glucose_mg_dl <= 350
        assert 30 <= v.weight_kg <= 160
        assert not v.cuff_too_loose
        assert not v.oximeter_sensor_off
        assert not v.irregular_rhythm


def test_circadian_drift_night_lower_than_afternoon() -> None:
    p = PatientProfile("p", seed=3, utc_offset_min=0, start=datetime(2026, 11, 29, 0, 0, tzinfo=UTC))
    night = [vitals_at(p, "stable", 3 * 3600 + m * 60) for m in range(30)]
    afternoon = [vitals_at(p, "stable", 15 * 3600 + m * 60) for m in range(30)]
    assert statistics.mean(v.heart_rate for v in night) < statistics.mean(v.heart_rate for v in afternoon) - 5
    assert statistics.mean(v.body_temperature for v in night) < statistics.mean(v.body_temperature for v in afternoon)


@pytest.mark.parametrize("seed", SEEDS)
def test_hypoxia_reaches_spo2_below_88_within_its_window(seed: int) -> None:
    p = _profile(seed)
    sc = get_scenario("hypoxia", onset_s=60, speed=1)
    before = vitals_at(p, sc, 30)
    after = vitals_at(p, sc, sc.full_effect_s)
    assert before.spo2 > 90
    assert after.spo2 < 88
    assert after.heart_rate > before.heart_rate + 8
    assert after.respiratory_rate > before.respiratory_rate + 6
    # falls over minutes, not instantly
    assert vitals_at(p, sc, 60 + 120).spo2 > 88


def test_speed_compresses_the_deterioration_into_seconds() -> None:
    p = _profile()
    sc = get_scenario("hypoxia", onset_s=5, speed=240)  # 20 min -> 5 s
    assert sc.full_effect_s == pytest.approx(10.0)
    assert vitals_at(p, sc, 4).spo2 > 90
    assert vitals_at(p, sc, 10).spo2 < 88


@pytest.mark.parametrize("seed", SEEDS)
def test_hypertensive_crisis_systolic_above_180(seed: int) -> None:
    p = _profile(seed)
    sc = get_scenario("hypertensive_crisis", onset_s=0, speed=60)
    v = vitals_at(p, sc, sc.full_effect_s + 1)
    assert v.systolic > 180
    assert v.diastolic > 105


@pytest.mark.parametrize("seed", SEEDS)
def test_sepsis_fever_tachycardia_falling_pressure(seed: int) -> None:
    p = _profile(seed)
    sc = get_scenario("sepsis", onset_s=0, speed=60)
    base = vitals_at(p, sc, 0)
    v = vitals_at(p, sc, sc.full_effect_s + 1)
    assert v.body_temperature >= 38.5
    assert v.heart_rate > 100
    assert v.systolic < base.systolic - 25
    assert v.respiratory_rate > base.respiratory_rate + 8


def test_fever_raises_heart_rate_about_ten_per_degree() -> None:
    p = _profile()
    sc = get_scenario("sepsis", onset_s=0, speed=60)
    base, v = vitals_at(p, "stable", 500), vitals_at(p, sc, 500)
    fever = v.body_temperature - base.body_temperature
    # scenario adds +22/min on top of the fever response
    assert v.heart_rate - base.heart_rate == pytest.approx(10 * fever + 22, abs=1.0)


def test_afib_rr_intervals_are_irregular() -> None:
    p = _profile()
    sinus = [x for t in range(120) for x in rr_intervals(p, "stable", t)]
    af = [x for t in range(120) for x in rr_intervals(p, get_scenario("afib", onset_s=0, speed=10), 60 + t)]
    cv_sinus = statistics.stdev(sinus) / statistics.mean(sinus)
    cv_af = statistics.stdev(af) / statistics.mean(af)
    assert cv_sinus < 0.08
    assert cv_af > 0.15
    # successive differences (RMSSD) much larger in AF

    def rmssd(xs: list[float]) -> float:
        return float(statistics.mean((a - b) ** 2 for a, b in itertools.pairwise(xs)) ** 0.5)

    assert rmssd(af) > 3 * rmssd(sinus)
    assert vitals_at(p, get_scenario("afib", onset_s=0), 10).irregular_rhythm


def test_rr_interval_count_matches_heart_rate() -> None:
    p = _profile()
    beats = sum(len(rr_intervals(p, "stable", t)) for t in range(600))
    mean_hr = statistics.mean(vitals_at(p, "stable", t).heart_rate for t in range(600))
    assert beats == pytest.approx(mean_hr * 10, rel=0.05)


def test_device_misuse_flags() -> None:
    p = _profile()
    sc = get_scenario("device_misuse", onset_s=10)
    assert not vitals_at(p, sc, 5).cuff_too_loose
    flags = [vitals_at(p, sc, 10 + t) for t in range(0, 240, 5)]
    assert all(v.cuff_too_loose for v in flags)
    assert any(v.oximeter_sensor_off for v in flags)
    assert any(v.inadequate_signal for v in flags)
    assert any(not v.oximeter_sensor_off and not v.inadequate_signal for v in flags)
    assert any(not v.hr_strap_contact for v in flags)


def test_cgm_every_five_minutes_lags_plasma() -> None:
    p = _profile(seed=5)
    assert CGM_INTERVAL_S == 300
    series = [cgm_glucose_at(p, "stable", k * CGM_INTERVAL_S) for k in range(288)]
    assert all(40 <= g <= 400 for g in series)
    assert max(series) - min(series) > 20  # meals show up


def test_scenarios_mapping_and_errors() -> None:
    assert set(SCENARIOS) == {"stable", "hypoxia", "hypertensive_crisis", "sepsis", "afib", "device_misuse"}
    assert all(isinstance(s, Scenario) and s.name == k for k, s in SCENARIOS.items())
    with pytest.raises(SimulationError):
        get_scenario("zombie")
    with pytest.raises(DevicesError):
        Scenario("hypoxia", speed=0)
    with pytest.raises(SimulationError):
        vitals_at(_profile(), "zombie", 0)
