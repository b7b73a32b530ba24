"""Alert engine scenarios with injected time: no clock, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from teleconsult.alerts.engine import Engine
from teleconsult.alerts.errors import AlertConfigError, InvalidObservationError
from teleconsult.alerts.model import AlertEvent, AlertKey, OpenAlert, Reading, Severity
from teleconsult.alerts.rules import EngineConfig, Level, PatientProfile, ThresholdRule, TrendRule

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
P = "patient-1"
UNITS = {"spo2": "%", "heart_rate": "/min", "pulse_rate": "/min", "systolic_bp": "mm[Hg]", "body_weight": "kg"}
UNITS |= {"body_temperature": "Cel", "respiratory_rate": "/min", "consciousness": "1", "supplemental_oxygen": "1"}


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reading(metric: str, value: float, at: datetime, *, patient: str = P, gateway: str | None = "gw-1") -> Reading:
    return Reading(patient, metric, value, UNITS.get(metric, "1"), at, "dev-1", gateway)


def drain(engine: Engine) -> list[AlertEvent]:
    out = []
    while (ev := engine.next_event()) is not None:
        out.append(ev)
    return out


def kinds(events: list[AlertEvent]) -> list[tuple[str, str, str]]:
    return [(e.kind.value, e.key.rule, e.severity.value) for e in events]


def feed(engine: Engine, metric: str, value: float, t: float, **kw: object) -> list[AlertEvent]:
    engine.receive(reading(metric, value, s(t), **kw), s(t))  # type: ignore[arg-type]
    return drain(engine)


@pytest.fixture
def engine() -> Engine:
    # NEWS2 off by default here so that threshold scenarios see only their own rule
    return Engine(EngineConfig(news2_enabled=False, trends=()))


# --- thresholds: minimum duration ----------------------------------------------------------------------------------


def test_min_duration_raises_from_timer_when_no_contrary_reading(engine: Engine) -> None:
    assert feed(engine, "spo2", 90, 0) == []
    assert engine.get_timer() == s(60)
    assert feed(engine, "spo2", 91, 30) == []
    assert engine.get_timer() == s(60)
    engine.handle_timer(s(59.999))
    assert drain(engine) == []
    engine.handle_timer(s(60))
    events = drain(engine)
    assert kinds(events) == [("raised", "spo2", "medium")]
    assert events[0].at == s(60)
    assert events[0].details["onset"] == s(0).isoformat()
    assert events[0].details["value"] == 91


def test_min_duration_raises_on_reading_when_stream_is_continuous(engine: Engine) -> None:
    for t in range(0, 60, 10):
        assert feed(engine, "spo2", 90, t) == []
    assert kinds(feed(engine, "spo2", 90, 60)) == [("raised", "spo2", "medium")]
    assert engine.get_timer() == s(60 + 900)  # the only timer left: escalation of a medium alert after 15 min
    engine.handle_timer(s(60))
    # no duplicate
    assert feed(engine, "spo2", 90, 70) == []


def test_min_duration_uses_measured_time_for_a_backlog(engine: Engine) -> None:
    # a gateway outbox delivers two minutes of low readings at once: the condition has lasted, raise now
    now = s(300)
    engine.receive(reading("spo2", 90, s(0)), now)
    assert drain(engine) == []
    engine.receive(reading("spo2", 90, s(90)), now)
    assert kinds(drain(engine)) == [("raised", "spo2", "medium")]


def test_short_dip_is_not_an_alert(engine: Engine) -> None:
    assert feed(engine, "spo2", 90, 0) == []
    assert feed(engine, "spo2", 95, 20) == []
    assert engine.get_timer() is None
    engine.handle_timer(s(120))
    assert drain(engine) == []


def test_zero_min_duration_raises_immediately(engine: Engine) -> None:
    assert kinds(feed(engine, "systolic_bp", 185, 0)) == [("raised", "systolic_bp", "medium")]


# --- thresholds: hysteresis, updates, dedup ------------------------------------------------------------------------


def test_hysteresis_clears_only_on_the_safe_side(engine: Engine) -> None:
    for t in (0, 60):
        feed(engine, "spo2", 91, t)
    assert engine.open_alerts() == {AlertKey(P, "spo2"): Severity.MEDIUM}
    # 93 is above the 92 threshold but within the 1-point hysteresis: still open, no event
    assert feed(engine, "spo2", 93, 70) == []
    assert feed(engine, "spo2", 92, 80) == []
    assert feed(engine, "spo2", 93, 90) == []
    events = feed(engine, "spo2", 93.5, 100)
    assert kinds(events) == [("cleared", "spo2", "medium")]
    assert engine.open_alerts() == {}


def test_severity_updates_with_hysteresis_and_one_open_alert(engine: Engine) -> None:
    feed(engine, "systolic_bp", 185, 0)  # medium (>= 180)
    events = feed(engine, "systolic_bp", 225, 10)  # high (>= 220)
    assert kinds(events) == [("updated", "systolic_bp", "high")]
    assert events[0].previous_severity is Severity.MEDIUM
    assert feed(engine, "systolic_bp", 216, 20) == []  # within 5 of 220: stays high
    assert kinds(feed(engine, "systolic_bp", 214, 30)) == [("updated", "systolic_bp", "medium")]
    assert feed(engine, "systolic_bp", 176, 40) == []  # within 5 of 180
    assert kinds(feed(engine, "systolic_bp", 170, 50)) == [("cleared", "systolic_bp", "medium")]


def test_low_and_high_sides_of_one_rule(engine: Engine) -> None:
    for t in (0, 60):
        events = feed(engine, "heart_rate", 38, t)
    assert kinds(events) == [("raised", "heart_rate", "high")]
    assert kinds(feed(engine, "pulse_rate", 60, 70)) == [("cleared", "heart_rate", "high")]


def test_dedup_many_violations_one_alert(engine: Engine) -> None:
    events = []
    for t in range(0, 600, 5):
        events += feed(engine, "spo2", 90, t)
    assert kinds(events) == [("raised", "spo2", "medium")]


def test_out_of_order_reading_does_not_drive_thresholds(engine: Engine) -> None:
    feed(engine, "systolic_bp", 185, 100)
    # an older reading arrives late with a normal value: the newest is still 185
    engine.receive(reading("systolic_bp", 120, s(50)), s(110))
    assert drain(engine) == []
    assert engine.open_alerts() == {AlertKey(P, "systolic_bp"): Severity.MEDIUM}


def test_per_patient_override_and_disable() -> None:
    engine = Engine(EngineConfig(news2_enabled=False, trends=()))
    copd = ThresholdRule("spo2", ("spo2",), (Level(Severity.MEDIUM, low=86), Level(Severity.HIGH, low=83)), 1)
    engine.set_patient(PatientProfile(P, thresholds={"spo2": copd}), T0)
    engine.set_patient(PatientProfile("p2", thresholds={"systolic_bp": ThresholdRule("systolic_bp", ("x",), ())}), T0)
    assert feed(engine, "spo2", 88, 0) == []  # fine for this COPD patient (default would be medium)
    assert kinds(feed(engine, "spo2", 85, 1)) == [("raised", "spo2", "medium")]
    assert feed(engine, "systolic_bp", 230, 2, patient="p2") == []  # disabled for p2
    assert kinds(feed(engine, "systolic_bp", 230, 3)) == [("raised", "systolic_bp", "high")]


def test_fahrenheit_is_converted() -> None:
    engine = Engine(EngineConfig(news2_enabled=False, trends=()))
    engine.receive(Reading(P, "body_temperature", 103.0, "[degF]", s(0)), s(0))  # 39.44 °C
    events = drain(engine)
    assert kinds(events) == [("raised", "body_temperature", "medium")]
    assert events[0].details["unit"] == "Cel"
    assert events[0].details["value"] == pytest.approx(39.444, abs=1e-3)


def test_naive_time_is_refused(engine: Engine) -> None:
    with pytest.raises(InvalidObservationError):
        engine.receive(Reading(P, "spo2", 97, "%", datetime(2026, 1, 1)), T0)


def test_config_validation() -> None:
    with pytest.raises(AlertConfigError):
        ThresholdRule("x", ("spo2",), (Level(Severity.LOW),))
    with pytest.raises(AlertConfigError):
        TrendRule("t", "spo2", timedelta(minutes=1), change=-4, clear=2)
    with pytest.raises(AlertConfigError):
        EngineConfig(thresholds=(ThresholdRule("news2", ("spo2",), (Level(Severity.LOW, low=1),)),))


# --- escalation ----------------------------------------------------------------------------------------------------


def test_escalation_when_not_acknowledged(engine: Engine) -> None:
    feed(engine, "systolic_bp", 230, 0)  # high: escalate after 5 min
    assert engine.get_timer() == s(300)
    engine.handle_timer(s(299))
    assert drain(engine) == []
    engine.handle_timer(s(300))
    events = drain(engine)
    assert kinds(events) == [("escalated", "systolic_bp", "high")]
    assert engine.get_timer() is None  # only once
    engine.handle_timer(s(3000))
    assert drain(engine) == []


def test_acknowledged_alert_is_not_escalated(engine: Engine) -> None:
    feed(engine, "systolic_bp", 230, 0)
    assert engine.acknowledge(AlertKey(P, "systolic_bp"), s(100))
    assert engine.get_timer() is None
    engine.handle_timer(s(1000))
    assert drain(engine) == []
    assert not engine.acknowledge(AlertKey(P, "nope"), s(100))


def test_worse_severity_rearms_escalation(engine: Engine) -> None:
    feed(engine, "systolic_bp", 185, 0)  # medium: 15 min
    assert engine.get_timer() == s(900)
    engine.acknowledge(AlertKey(P, "systolic_bp"), s(10))
    assert engine.get_timer() is None
    feed(engine, "systolic_bp", 230, 20)  # high now: acknowledgement was for medium
    assert engine.get_timer() == s(300)
    engine.handle_timer(s(300))
    assert kinds(drain(engine)) == [("escalated", "systolic_bp", "high")]


def test_resolve_closes_and_a_new_occurrence_raises_again(engine: Engine) -> None:
    feed(engine, "systolic_bp", 230, 0)
    assert engine.resolve(AlertKey(P, "systolic_bp"), s(10))
    assert engine.open_alerts() == {}
    assert engine.get_timer() is None
    assert kinds(feed(engine, "systolic_bp", 231, 20)) == [("raised", "systolic_bp", "high")]


# --- no data and gateways ------------------------------------------------------------------------------------------

DAY = timedelta(days=1)
GRACE = timedelta(minutes=15)


def weight_patient(engine: Engine) -> None:
    engine.set_patient(PatientProfile(P, expected_intervals={"body_weight": DAY}, gateway_id="gw-1"), T0)


def test_no_data_timer_patient_did_not_measure(engine: Engine) -> None:
    weight_patient(engine)
    engine.gateway_status("gw-1", True, T0)
    assert engine.get_timer() == T0 + DAY + GRACE
    engine.handle_timer(T0 + DAY)
    assert drain(engine) == []
    engine.handle_timer(T0 + DAY + GRACE)
    events = drain(engine)
    assert kinds(events) == [("raised", "no_data:body_weight", "low")]
    assert events[0].details["cause"] == "not_measured"
    assert events[0].details["gateway_online"] is True
    # the patient steps on the scale: cleared, next deadline from that reading
    later = (T0 + DAY + timedelta(hours=1) - T0).total_seconds()
    assert kinds(feed(engine, "body_weight", 80, later)) == [("cleared", "no_data:body_weight", "low")]
    assert engine.get_timer() == s(later) + DAY + GRACE


def test_reading_resets_no_data_deadline(engine: Engine) -> None:
    weight_patient(engine)
    feed(engine, "body_weight", 80, 3600)
    assert engine.get_timer() == s(3600) + DAY + GRACE
    engine.handle_timer(T0 + DAY + GRACE)
    assert drain(engine) == []


def test_gateway_offline_is_distinguished_from_not_measured(engine: Engine) -> None:
    weight_patient(engine)
    feed(engine, "body_weight", 80, 0)
    engine.gateway_status("gw-1", False, s(600))
    assert engine.get_timer() == s(900)  # offline for 5 min
    engine.handle_timer(s(900))
    events = drain(engine)
    assert kinds(events) == [("raised", "gateway_offline", "medium")]
    assert events[0].details == {"cause": "gateway_offline", "gateway_id": "gw-1", "offline_since": s(600).isoformat()}
    # the weight deadline passes while the gateway is offline: no "did not measure" alert
    engine.handle_timer(T0 + 2 * DAY)
    assert kinds(drain(engine)) == [("escalated", "gateway_offline", "medium")]  # nobody acknowledged it
    # the gateway returns: gateway alert cleared; its outbox gets 2 minutes to deliver
    back = T0 + 2 * DAY
    engine.gateway_status("gw-1", True, back)
    assert kinds(drain(engine)) == [("cleared", "gateway_offline", "medium")]
    assert engine.get_timer() == back + timedelta(minutes=2)
    engine.handle_timer(back + timedelta(minutes=2))
    events = drain(engine)
    assert kinds(events) == [("raised", "no_data:body_weight", "low")]
    assert events[0].details["cause"] == "not_measured"


def test_short_gateway_blip_raises_nothing(engine: Engine) -> None:
    weight_patient(engine)
    feed(engine, "body_weight", 80, 0)
    engine.gateway_status("gw-1", False, s(10))
    engine.gateway_status("gw-1", True, s(60))
    engine.handle_timer(s(400))
    assert drain(engine) == []


def test_backlog_after_reconnect_clears_nothing_spurious(engine: Engine) -> None:
    weight_patient(engine)
    engine.gateway_status("gw-1", False, s(0))
    engine.handle_timer(s(300))
    assert kinds(drain(engine)) == [("raised", "gateway_offline", "medium")]
    back = T0 + 2 * DAY
    engine.gateway_status("gw-1", True, back)
    drain(engine)
    # the outbox delivers a weight measured yesterday (stored while offline) and today's
    engine.receive(reading("body_weight", 80, T0 + DAY), back + timedelta(seconds=5))
    engine.receive(reading("body_weight", 80.2, back - timedelta(hours=1)), back + timedelta(seconds=6))
    engine.handle_timer(back + timedelta(minutes=5))
    assert drain(engine) == []


def test_resolved_no_data_waits_for_fresh_data(engine: Engine) -> None:
    weight_patient(engine)
    engine.handle_timer(T0 + DAY + GRACE)
    drain(engine)
    engine.resolve(AlertKey(P, "no_data:body_weight"), T0 + DAY + GRACE)
    engine.handle_timer(T0 + 5 * DAY)
    assert drain(engine) == []


# --- trends --------------------------------------------------------------------------------------------------------


def trend_engine() -> Engine:
    return Engine(EngineConfig(news2_enabled=False, thresholds=()))


def test_spo2_falling_four_points_in_ten_minutes() -> None:
    engine = trend_engine()
    assert feed(engine, "spo2", 98, 0) == []
    assert feed(engine, "spo2", 97, 180) == []
    assert feed(engine, "spo2", 95, 360) == []  # -3
    events = feed(engine, "spo2", 94, 540)  # -4 from 98 within 10 min
    assert kinds(events) == [("raised", "spo2_falling", "medium")]
    assert events[0].details["change"] == -4
    assert feed(engine, "spo2", 95, 560) == []  # -3: still within the clear hysteresis (-2)
    assert kinds(feed(engine, "spo2", 97, 580)) == [("cleared", "spo2_falling", "medium")]


def test_slow_spo2_fall_is_not_a_trend() -> None:
    engine = trend_engine()
    events = []
    for i, v in enumerate([98, 97, 96, 95, 94]):
        events += feed(engine, "spo2", v, i * 400)  # 1 point per 6m40s: never 4 within 10 min
    assert events == []


def test_weight_gain_only_for_heart_failure() -> None:
    engine = trend_engine()
    engine.set_patient(PatientProfile(P, heart_failure=True), T0)
    engine.set_patient(PatientProfile("p2"), T0)
    day = 86400
    for p in (P, "p2"):
        assert feed(engine, "body_weight", 80.0, 0, patient=p) == []
        assert feed(engine, "body_weight", 81.0, day, patient=p) == []
    assert feed(engine, "body_weight", 81.9, 2 * day) == []
    assert kinds(feed(engine, "body_weight", 82.0, 3 * day)) == [("raised", "weight_gain", "medium")]
    assert feed(engine, "body_weight", 82.0, 3 * day, patient="p2") == []
    # four days later the 80 kg point is out of the window: +1.0 from 81.0 < 1.5 clears
    assert kinds(feed(engine, "body_weight", 82.0, 4 * day + 1)) == [("cleared", "weight_gain", "medium")]


def test_weight_gain_outside_three_days_is_not_a_trend() -> None:
    engine = trend_engine()
    engine.set_patient(PatientProfile(P, heart_failure=True), T0)
    feed(engine, "body_weight", 80.0, 0)
    assert feed(engine, "body_weight", 82.5, 3 * 86400 + 1) == []


# --- NEWS2 ---------------------------------------------------------------------------------------------------------


def news2_engine() -> Engine:
    return Engine(EngineConfig(thresholds=(), trends=()))


def test_news2_single_three_then_medium_then_clear() -> None:
    engine = news2_engine()
    events = feed(engine, "spo2", 91, 0)
    assert kinds(events) == [("raised", "news2", "low")]
    assert events[0].details["risk"] == "low-medium"
    assert events[0].details["partial"] is True
    assert "respiratory_rate" in events[0].details["missing"]  # type: ignore[operator]
    events = feed(engine, "pulse_rate", 115, 10)  # 3 + 2 = 5
    assert kinds(events) == [("updated", "news2", "medium")]
    assert events[0].details["total"] == 5
    events = feed(engine, "respiratory_rate", 26, 20)  # 8
    assert kinds(events) == [("updated", "news2", "high")]
    feed(engine, "respiratory_rate", 16, 30)
    feed(engine, "pulse_rate", 80, 40)
    assert kinds(feed(engine, "spo2", 97, 50)) == [("cleared", "news2", "low")]


def test_news2_scored_once_per_patient_for_a_batch_of_readings() -> None:
    engine = news2_engine()
    # one ingest batch: two patients, several observations each; the score uses the newest of each parameter
    for metric, value, t, patient in [("spo2", 97, 0, P), ("spo2", 91, 1, "p2"), ("pulse_rate", 115, 2, P),
                                      ("spo2", 91, 3, P), ("pulse_rate", 80, 4, "p2")]:  # fmt: skip
        engine.receive(reading(metric, value, s(t), patient=patient), s(t))
    events = drain(engine)
    assert [(e.key.patient_id, e.kind.value, e.severity.value, e.details["total"]) for e in events] == [
        (P, "raised", "medium", 5),  # spo2 91 (3) + pulse 115 (2): one event, not one per reading
        ("p2", "raised", "low", 3),  # patients in the order of their last reading (P at 3 s, p2 at 4 s)
    ]


def test_news2_of_a_batch_is_settled_before_a_clinician_action() -> None:
    engine = news2_engine()
    engine.receive(reading("spo2", 91, s(0)), s(0))
    assert engine.acknowledge(AlertKey(P, "news2"), s(1))  # the alert exists by then, though not yet drained
    assert kinds(drain(engine)) == [("raised", "news2", "low")]
    assert engine.get_timer() is None  # acknowledged: no escalation timer


def test_news2_stale_observations_are_missing_and_do_not_clear() -> None:
    engine = news2_engine()
    feed(engine, "spo2", 91, 0)
    drain(engine)
    # two hours later only a temperature comes in: SpO2 is stale (missing), the score would be 0 but must not clear
    events = feed(engine, "body_temperature", 37.0, 7200)
    assert events == []
    assert engine.open_alerts() == {AlertKey(P, "news2"): Severity.LOW}
    # a fresh normal SpO2 clears it
    assert kinds(feed(engine, "spo2", 97, 7260)) == [("cleared", "news2", "low")]


def test_news2_scale2_from_profile_and_oxygen() -> None:
    engine = news2_engine()
    engine.set_patient(PatientProfile(P, spo2_scale=2, supplemental_oxygen=True), T0)
    events = feed(engine, "spo2", 88, 0)  # 0 on scale 2; on oxygen 2 points -> low, no alert
    assert events == []
    events = feed(engine, "spo2", 97, 10)  # >= 97 on oxygen: 3, + oxygen 2 = 5
    assert kinds(events) == [("updated", "news2", "medium")] or kinds(events) == [("raised", "news2", "medium")]
    assert events[0].details["components"] == {"spo2": 3, "air_or_oxygen": 2}


def test_news2_consciousness_code() -> None:
    engine = news2_engine()
    events = feed(engine, "consciousness", 2, 0)  # voice
    assert kinds(events) == [("raised", "news2", "low")]
    assert events[0].details["components"] == {"consciousness": 3}


# --- restore -------------------------------------------------------------------------------------------------------


def test_restore_from_store_no_duplicate_and_escalation_kept() -> None:
    engine = Engine(EngineConfig(news2_enabled=False, trends=()))
    engine.restore(
        [
            OpenAlert(AlertKey(P, "systolic_bp"), Severity.HIGH, s(-60)),
            OpenAlert(AlertKey("p2", "systolic_bp"), Severity.HIGH, s(-60), acknowledged=True),
        ],
        T0,
    )
    assert drain(engine) == []
    assert engine.get_timer() == s(240)  # raised 60 s before the restart, 5 min
    assert feed(engine, "systolic_bp", 230, 0) == []  # still high: same alert
    assert kinds(feed(engine, "systolic_bp", 120, 10, patient="p2")) == [("cleared", "systolic_bp", "high")]
    engine.handle_timer(s(240))
    assert kinds(drain(engine)) == [("escalated", "systolic_bp", "high")]


def test_timer_ordering_many_patients() -> None:
    engine = Engine(EngineConfig(news2_enabled=False, trends=()))
    for i in range(50):
        engine.receive(reading("spo2", 90, s(i), patient=f"p{i}"), s(i))
    fired: list[AlertEvent] = []
    while (t := engine.get_timer()) is not None and t <= s(200):
        engine.handle_timer(t)
        fired += drain(engine)
    assert [e.key.patient_id for e in fired] == [f"p{i}" for i in range(50)]
    assert [e.at for e in fired] == [s(i + 60) for i in range(50)]


def test_news2_pulse_is_the_newer_of_heart_rate_and_pulse_rate() -> None:
    engine = news2_engine()
    feed(engine, "heart_rate", 135, 100)  # 3 points
    drain(engine)
    # a pulse_rate reading measured earlier (first of its metric, so newest for pulse_rate) must not replace it
    engine.receive(reading("pulse_rate", 70, s(50)), s(101))
    assert drain(engine) == []
    assert engine.open_alerts() == {AlertKey(P, "news2"): Severity.LOW}
    assert kinds(feed(engine, "pulse_rate", 70, 110)) == [("cleared", "news2", "low")]


def test_brief_desaturation_inside_one_batch_raises_and_clears() -> None:
    """Issue 15 item 2: a batch is fed whole, in measured_at order (SpO2 97, 85, 97 within 2 s): the trend and a
    zero-duration threshold see the 85, NEWS2 scores the batch once on its newest observation."""
    spo2 = ThresholdRule("spo2", ("spo2",), (Level(Severity.HIGH, low=88),))
    engine = Engine(EngineConfig(thresholds=(spo2,)))
    engine.set_patient(PatientProfile(P), s(0))
    for t, v in ((0, 97), (1, 85), (2, 97)):  # one batch: every receive() before any drain
        engine.receive(reading("spo2", v, s(t)), s(3))
    events = drain(engine)
    assert kinds(events) == [
        ("raised", "spo2", "high"),
        ("raised", "spo2_falling", "medium"),
        ("cleared", "spo2", "high"),
        ("cleared", "spo2_falling", "medium"),
    ]
    assert events[0].details["value"] == 85
    assert engine.open_alerts() == {}  # NEWS2 scored 97 (the newest), not 85: no alert left open
