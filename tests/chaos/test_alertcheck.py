"""The alert verdict of a chaos run (pure): the offline one-pass reference and its comparison with stored episodes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from teleconsult.alerts.model import Reading
from teleconsult.chaos.alertcheck import Episode, compare, compared, onset_of, reference

pytestmark = pytest.mark.chaos

T0 = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
P = "00000000-0000-4000-8000-000000000001"


def spo2(seconds: float, value: float, patient: str = P) -> Reading:
    return Reading(patient, "spo2", value, "%", T0 + timedelta(seconds=seconds))


def test_compare_detects_a_missed_and_a_duplicated_alert() -> None:
    a = Episode(P, "spo2", T0)
    b = Episode(P, "spo2_falling", T0 + timedelta(seconds=5))
    c = Episode(P, "spo2", T0 + timedelta(minutes=3))
    stray = Episode(P, "heart_rate", T0)
    verdict = compare([a, b, c], [a, b, b, stray])  # c never raised, b raised twice (e.g. by two leaders)
    assert verdict.missed == [c]
    assert verdict.duplicated == [b]
    assert verdict.unexpected == [stray]
    assert (verdict.expected, verdict.stored, verdict.ok) == (3, 4, False)
    doc = verdict.to_json()
    assert (doc["alerts_missed"], doc["alerts_duplicated"], doc["alerts_unexpected"]) == (1, 1, 1)
    assert doc["alerts_missed_episodes"] == [{"patient_id": P, "rule": "spo2", "onset": c.onset.isoformat()}]


def test_compare_exact_match_is_ok_and_order_does_not_matter() -> None:
    eps = [Episode(P, "spo2", T0 + timedelta(seconds=i)) for i in range(3)]
    verdict = compare(eps, list(reversed(eps)))
    assert (verdict.missed, verdict.duplicated, verdict.unexpected, verdict.ok) == ([], [], [], True)
    assert compare([], []).ok


def test_compare_an_unexpected_episode_stored_twice_is_also_a_duplicate() -> None:
    stray = Episode(P, "spo2", T0)
    verdict = compare([], [stray, stray])
    assert (verdict.unexpected, verdict.duplicated) == ([stray], [stray])


def test_reference_is_one_pass_in_measured_order_whatever_the_arrival_order() -> None:
    # 97, then 86 for 70 s (spo2 high after its 60 s minimum duration), back to 97, then a brief 85 at 200 s that the
    # next reading cancels before 60 s: one threshold episode (onset 10 s) and the trend episodes of the two drops
    readings = [spo2(0, 97), *(spo2(10 + i, 86) for i in range(0, 71, 5)), spo2(90, 97), spo2(200, 85), spo2(201, 97)]
    shuffled = readings[::2] + readings[1::2]
    until = T0 + timedelta(minutes=10)
    eps = reference(readings, until)
    assert eps == reference(shuffled, until)
    assert Episode(P, "spo2", T0 + timedelta(seconds=10)) in eps
    assert [e for e in eps if e.rule == "spo2"] == [Episode(P, "spo2", T0 + timedelta(seconds=10))]
    falls = [e.onset for e in eps if e.rule == "spo2_falling"]
    assert falls == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=200)]


def test_reference_runs_the_timers_up_to_the_end_of_the_run() -> None:
    readings = [spo2(0, 97), spo2(10, 86)]  # nothing contradicts 86: the minimum-duration timer raises it
    assert Episode(P, "spo2", T0 + timedelta(seconds=10)) in reference(readings, T0 + timedelta(seconds=71))
    assert not [e for e in reference(readings, T0 + timedelta(seconds=69)) if e.rule == "spo2"]


def test_reference_ignores_news2_and_the_compared_rules_are_thresholds_and_trends() -> None:
    readings = [spo2(i, 84) for i in range(0, 120, 2)]
    assert {e.rule for e in reference(readings, T0 + timedelta(minutes=5))} == {"spo2"}  # NEWS2 would score 3
    assert [r for r in ("spo2", "heart_rate", "spo2_falling", "systolic_bp") if compared(r)] == [
        "spo2", "heart_rate", "spo2_falling", "systolic_bp"
    ]  # fmt: skip
    assert [r for r in ("news2", "no_data:spo2", "gateway_offline") if compared(r)] == []


def test_onset_of_prefers_the_threshold_onset() -> None:
    at, onset = T0.isoformat(), (T0 - timedelta(seconds=60)).isoformat()
    assert onset_of({"measured_at": at, "onset": onset}) == T0 - timedelta(seconds=60)
    assert onset_of({"measured_at": at}) == T0
    assert onset_of({"total": 7}) is None
