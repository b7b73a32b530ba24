"""The alert verdict of a chaos run (pure): the offline one-pass reference and its comparison with stored episodes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from teleconsult.alerts.model import Reading
from teleconsult.chaos.alertcheck import Episode, compare, compared, episodes_of_events, onset_of, reference

pytestmark = pytest.mark.chaos

T0 = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
P = "00000000-0000-4000-8000-000000000001"


def spo2(seconds: float, value: float, patient: str = P) -> Reading:
    return Reading(patient, "spo2", value, "%", T0 + timedelta(seconds=seconds))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_compare_detects_a_missed_and_a_duplicated_alert() -> None:
    first = Episode(P, "spo2", at(0), at(100))
    second = Episode(P, "spo2", at(200), at(300))
    trend = Episode(P, "spo2_falling", at(5), at(20))
    # the first episode alerted twice (raised, cleared, raised again within it: e.g. a replay with another onset),
    # the second never; the trend exactly; a heart-rate alert nobody expected
    again = Episode(P, "spo2", at(50), at(100))
    stray = Episode(P, "heart_rate", at(0), None)
    verdict = compare([first, second, trend], [first, again, trend, stray])
    assert verdict.missed == [second]
    assert verdict.duplicated == [again]
    assert verdict.unexpected == [stray]
    assert (verdict.expected, verdict.stored, verdict.ok) == (3, 4, False)
    doc = verdict.to_json()
    assert (doc["alerts_missed"], doc["alerts_duplicated"], doc["alerts_unexpected"]) == (1, 1, 1)
    assert doc["alerts_missed_episodes"] == [
        {"patient_id": P, "rule": "spo2", "onset": at(200).isoformat(), "end": at(300).isoformat()}
    ]


def test_compare_matches_an_episode_whose_onset_moved_and_one_left_open() -> None:
    expected = [Episode(P, "spo2", at(0), at(100)), Episode(P, "spo2", at(200), None)]
    stored = [Episode(P, "spo2", at(16), at(100)), Episode(P, "spo2", at(260), None)]  # late readings: later onsets
    verdict = compare(expected, list(reversed(stored)))
    assert (verdict.missed, verdict.duplicated, verdict.unexpected, verdict.ok) == ([], [], [], True)
    assert verdict.onset_shift_s == [16.0, 60.0]
    assert compare([], []).ok
    # an episode of another patient or rule, or outside the interval, is no match
    assert compare(expected[:1], [Episode(P, "spo2", at(100), at(150))]).missed == expected[:1]
    assert compare(expected[:1], [Episode("other", "spo2", at(0), at(100))]).missed == expected[:1]


def test_compare_two_expected_episodes_merged_into_one_alert_is_a_missed_one() -> None:
    expected = [Episode(P, "spo2", at(0), at(100)), Episode(P, "spo2", at(110), at(200))]
    verdict = compare(expected, [Episode(P, "spo2", at(0), at(200))])  # the clear at 100 never happened live
    assert (verdict.missed, verdict.duplicated) == ([expected[1]], [])


def test_stored_episodes_end_at_the_clear_of_their_alert_row() -> None:
    raised = {"onset": at(0).isoformat(), "measured_at": at(60).isoformat()}
    cleared = {**raised, "cleared": {"measured_at": at(90).isoformat()}}
    rows = [
        ("raised", 1, P, "spo2", raised),
        ("raised", 2, P, "news2", {"total": 5}),
        ("raised", 1, P, "spo2", {"onset": at(30).isoformat()}),  # a second raised event on the same row
        ("cleared", 1, P, "spo2", cleared),
    ]
    episodes, by_rule = episodes_of_events(rows)
    assert episodes == [Episode(P, "spo2", at(0), at(90)), Episode(P, "spo2", at(30), at(90))]
    assert by_rule == {"spo2": 2, "news2": 1}
    verdict = compare([Episode(P, "spo2", at(0), at(90))], episodes)
    assert (len(verdict.missed), len(verdict.duplicated)) == (0, 1)


def test_reference_is_one_pass_in_measured_order_whatever_the_arrival_order() -> None:
    # 97, then 86 for 70 s (spo2 high after its 60 s minimum duration), back to 97, then a brief 85 at 200 s that the
    # next reading cancels before 60 s: one threshold episode (onset 10 s) and the trend episodes of the two drops
    readings = [spo2(0, 97), *(spo2(10 + i, 86) for i in range(0, 71, 5)), spo2(90, 97), spo2(200, 85), spo2(201, 97)]
    shuffled = readings[::2] + readings[1::2]
    until = T0 + timedelta(minutes=10)
    eps = reference(readings, until)
    assert eps == reference(shuffled, until)
    assert [e for e in eps if e.rule == "spo2"] == [Episode(P, "spo2", at(10), at(90))]  # cleared by the 97 at 90 s
    falls = [e.onset for e in eps if e.rule == "spo2_falling"]
    assert falls == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=200)]


def test_reference_runs_the_timers_up_to_the_end_of_the_run() -> None:
    readings = [spo2(0, 97), spo2(10, 86)]  # nothing contradicts 86: the minimum-duration timer raises it
    assert Episode(P, "spo2", at(10)) in reference(readings, at(71))
    assert not [e for e in reference(readings, at(69)) if e.rule == "spo2"]


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
