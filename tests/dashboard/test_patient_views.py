"""Pure parts of the patient views: NEWS2 from latest readings (freshness, pulse source, implausible values), order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from teleconsult.api.patient_views import Latest, acuity_key, age_s, news2_from_latest, overview_row, sort_rows

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def latest(**values: tuple[float, float]) -> dict[str, Latest]:
    """metric=(value, minutes ago)."""
    return {m: Latest(m, v, "", NOW - timedelta(minutes=ago)) for m, (v, ago) in values.items()}


def test_stale_observations_are_missing_not_normal() -> None:
    r = news2_from_latest(latest(spo2=(85, 5), heart_rate=(135, 90)), NOW)
    assert r.components == {"spo2": 3}
    assert "pulse" in r.missing
    assert r.partial


def test_pulse_is_the_newest_of_heart_rate_and_pulse_rate() -> None:
    r = news2_from_latest(latest(heart_rate=(135, 10), pulse_rate=(80, 1)), NOW)
    assert r.components["pulse"] == 0
    r = news2_from_latest(latest(heart_rate=(135, 1), pulse_rate=(80, 10)), NOW)
    assert r.components["pulse"] == 3


def test_implausible_value_is_left_out() -> None:
    r = news2_from_latest(latest(spo2=(130, 1), systolic_bp=(85, 1)), NOW)
    assert "spo2" in r.missing
    assert r.components == {"systolic_bp": 3}


def test_oxygen_reading_and_full_score() -> None:
    r = news2_from_latest(
        latest(
            respiratory_rate=(26, 1), spo2=(90, 1), supplemental_oxygen=(1, 1), systolic_bp=(95, 1),
            heart_rate=(125, 1), body_temperature=(39.2, 1),
        ),
        NOW,
    )  # fmt: skip
    assert r.components == {
        "respiratory_rate": 3, "spo2": 3, "air_or_oxygen": 2, "systolic_bp": 2, "pulse": 2, "temperature": 2,
    }  # fmt: skip
    assert r.missing == ("consciousness",)
    assert r.risk.value == "high"


def test_acuity_order() -> None:
    keys = {
        "alert-high": acuity_key(max_severity="high", news2_total=0, open_alerts=1, no_data_since=None, name="b"),
        "news7": acuity_key(max_severity=None, news2_total=7, open_alerts=0, no_data_since=NOW, name="a"),
        "alert-med": acuity_key(max_severity="medium", news2_total=9, open_alerts=1, no_data_since=NOW, name="c"),
        "silent-long": acuity_key(
            max_severity=None, news2_total=0, open_alerts=0, no_data_since=NOW - timedelta(hours=5), name="z"
        ),
        "recent": acuity_key(max_severity=None, news2_total=0, open_alerts=0, no_data_since=NOW, name="a"),
        "never": acuity_key(max_severity=None, news2_total=0, open_alerts=0, no_data_since=None, name="a"),
    }
    assert sorted(keys, key=keys.__getitem__) == ["alert-high", "alert-med", "news7", "silent-long", "recent", "never"]


def test_overview_rows_connectivity_and_sort() -> None:
    fresh = overview_row(
        patient={"id": "p1", "display_name": "A", "birth_date": None, "sex": None},
        latest=latest(spo2=(86, 1)), alerts=None, gateways=[], now=NOW,
    )  # fmt: skip
    stale = overview_row(
        patient={"id": "p2", "display_name": "B", "birth_date": None, "sex": None},
        latest=latest(spo2=(97, 30)), alerts={"count": 1, "max_severity": "low", "rules": ["gateway_offline"]},
        gateways=[], now=NOW,
    )  # fmt: skip
    assert fresh["connectivity"] == "online"
    assert stale["connectivity"] == "offline"
    assert stale["no_data_s"] == 1800
    assert [r["id"] for r in sort_rows([fresh, stale])] == ["p2", "p1"]
    assert age_s(NOW, NOW + timedelta(seconds=5)) == 0
    idle = overview_row(
        patient={"id": "p3", "display_name": "C", "birth_date": None, "sex": None},
        latest=latest(spo2=(97, 30)), alerts=None,
        gateways=[{"id": "gw", "last_seen_at": (NOW - timedelta(seconds=20)).isoformat(), "devices": 3}], now=NOW,
    )  # fmt: skip
    assert idle["connectivity"] == "idle"
