"""Metric vocabulary (codes.py) and normalized readings (readings.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings

from devices.codes import METRICS, convert, get_metric, is_valid_unit, to_canonical
from devices.datetime_field import DateTime
from devices.errors import DevicesError, UnknownMetricError
from devices.gatt.blood_pressure import (
    BloodPressureMeasurement,
    BloodPressureStatus,
    IntermediateCuffPressure,
    PressureUnit,
    PulseRateRange,
)
from devices.gatt.cgm import CgmMeasurement, CgmRecord
from devices.gatt.glucose import GlucoseContext, GlucoseMeasurement, GlucoseSensorStatus
from devices.gatt.heart_rate import HeartRateMeasurement
from devices.gatt.plx import PlxContinuousMeasurement, PlxDeviceSensorStatus, PlxSpotCheckMeasurement
from devices.gatt.temperature import TemperatureMeasurement, TemperatureUnit
from devices.gatt.weight import WeightMeasurement
from devices.ieee11073 import Number, Special
from devices.readings import Reading, to_readings
from tests.devices import strategies as S

RECEIVED = datetime(2026, 11, 29, 10, 0, 5, tzinfo=UTC)
TS = DateTime(2026, 11, 29, 11, 0, 0)  # device local time (UTC+1, 2 s slow)
OFFSET = timedelta(hours=-1, seconds=2)  # gateway UTC minus device clock read as UTC
NAN = Number.of_special(Special.NAN)


def test_required_metrics() -> None:
    required = {
        "heart_rate", "pulse_rate", "spo2", "systolic_bp", "diastolic_bp", "mean_arterial_pressure", "cuff_pressure",
        "body_temperature", "body_weight", "body_height", "bmi", "glucose", "respiratory_rate", "rr_interval",
        "energy_expended", "pulse_amplitude_index",
    }  # fmt: skip
    assert required <= set(METRICS)
    for name, metric in METRICS.items():
        assert metric.name == name
        assert metric.units
        assert all("bpm" not in u for u in metric.units)


@pytest.mark.parametrize(
    ("name", "loinc", "mdc", "unit", "vital"),
    [
        ("heart_rate", "8867-4", 147842, "/min", True),
        ("pulse_rate", "8867-4", 149530, "/min", True),
        ("spo2", "2708-6", 150456, "%", True),
        ("systolic_bp", "8480-6", 150021, "mm[Hg]", True),
        ("diastolic_bp", "8462-4", 150022, "mm[Hg]", True),
        ("mean_arterial_pressure", "8478-0", 150023, "mm[Hg]", False),
        ("body_temperature", "8310-5", 150364, "Cel", True),
        ("body_weight", "29463-7", 188736, "kg", True),
        ("glucose", "2339-0", 160368, "mg/dL", False),
        ("respiratory_rate", "9279-1", 151562, "/min", True),
    ],
)
def test_codes(name: str, loinc: str, mdc: int, unit: str, vital: bool) -> None:
    m = get_metric(name)
    assert (m.loinc, m.mdc, m.canonical_unit, m.fhir_vital_sign) == (loinc, mdc, unit, vital)
    assert m.display_en
    assert m.display_fr


def test_extra_codes_and_units() -> None:
    assert "59408-5" in get_metric("spo2").extra_loinc
    assert "15074-8" in get_metric("glucose").extra_loinc
    assert is_valid_unit("glucose", "mmol/L")
    assert is_valid_unit("body_temperature", "[degF]")
    assert not is_valid_unit("heart_rate", "bpm")
    assert not is_valid_unit("nope", "/min")
    with pytest.raises(UnknownMetricError) as info:
        get_metric("heartrate")
    assert isinstance(info.value, DevicesError)
    assert isinstance(info.value, LookupError)


def test_conversions() -> None:
    assert convert(98.6, "[degF]", "Cel") == pytest.approx(37.0)
    assert convert(16.0, "kPa", "mm[Hg]") == pytest.approx(120.01, abs=0.01)
    assert to_canonical("body_weight", 154.32, "[lb_av]") == pytest.approx(70.0, abs=0.01)
    with pytest.raises(ValueError):
        convert(5.0, "mmol/L", "mg/dL")


# --- readings -------------------------------------------------------------------------------------------------------


def test_heart_rate_readings() -> None:
    m = HeartRateMeasurement(72, True, 100, (1024, 512))
    rs = to_readings(m, received_at=RECEIVED)
    assert [(r.metric, r.value, r.unit) for r in rs] == [
        ("heart_rate", 72.0, "/min"),
        ("rr_interval", 1.0, "s"),
        ("rr_interval", 0.5, "s"),
        ("energy_expended", 100.0, "kJ"),
    ]
    assert all(r.measured_at == RECEIVED and r.device_time is None for r in rs)
    assert rs[0].flags == {"sensor_contact": True}
    assert rs[2].flags == {"sensor_contact": True, "rr_index": 1}
    assert len({r.group for r in rs}) == 1
    uuid.UUID(rs[0].group or "")
    # no timestamp: the group depends on the reception time too, so two identical notifications stay distinct
    assert to_readings(m, received_at=RECEIVED + timedelta(seconds=1))[0].group != rs[0].group
    assert to_readings(m, received_at=RECEIVED)[0].group == rs[0].group


def test_heart_rate_without_skin_contact_is_not_a_reading() -> None:
    no_contact = to_readings(HeartRateMeasurement(0, False, 250, (1024,)), received_at=RECEIVED)
    assert [(r.metric, r.value, r.flags) for r in no_contact] == [("energy_expended", 250.0, {"sensor_contact": False})]
    # contact not supported by the strap (None): the value is all we have, and it is kept
    unsupported = to_readings(HeartRateMeasurement(64, None), received_at=RECEIVED)
    assert [(r.metric, r.value) for r in unsupported] == [("heart_rate", 64.0)]


def test_blood_pressure_readings_group_time_flags() -> None:
    m = BloodPressureMeasurement(
        Number(138, 0),
        Number(85, 0),
        Number(103, 0),
        PressureUnit.MMHG,
        TS,
        Number(72, 0),
        1,
        BloodPressureStatus(cuff_too_loose=True, pulse_rate_range=PulseRateRange.ABOVE_UPPER_LIMIT),
    )
    rs = to_readings(m, received_at=RECEIVED, clock_offset=OFFSET)
    assert [(r.metric, r.value, r.unit) for r in rs] == [
        ("systolic_bp", 138.0, "mm[Hg]"),
        ("diastolic_bp", 85.0, "mm[Hg]"),
        ("mean_arterial_pressure", 103.0, "mm[Hg]"),
        ("pulse_rate", 72.0, "/min"),
    ]
    expected_time = datetime(2026, 11, 29, 10, 0, 2, tzinfo=UTC)
    assert {r.measured_at for r in rs} == {expected_time}
    assert {r.device_time for r in rs} == {datetime(2026, 11, 29, 11, 0, 0)}
    assert rs[0].flags == {"user_id": 1, "cuff_too_loose": True, "pulse_rate_range": "above_upper_limit"}
    assert len({r.group for r in rs}) == 1
    # deterministic: same measurement, other reception time -> same group (it has a device timestamp)
    again = to_readings(m, received_at=RECEIVED + timedelta(minutes=5), clock_offset=OFFSET)
    assert again == rs
    assert to_readings(m, received_at=RECEIVED, group="g1")[0].group == "g1"


def test_specials_are_skipped_and_flagged() -> None:
    m = BloodPressureMeasurement(Number(120, 0), Number(80, 0), NAN)
    rs = to_readings(m, received_at=RECEIVED)
    assert [r.metric for r in rs] == ["systolic_bp", "diastolic_bp"]
    assert rs[0].flags["mean_arterial_pressure_unavailable"] == "NaN"
    all_special = BloodPressureMeasurement(NAN, Number.of_special(Special.NRES), Number.of_special(Special.POS_INF))
    assert to_readings(all_special, received_at=RECEIVED) == []
    t = TemperatureMeasurement(Number.of_special(Special.NEG_INF))
    assert to_readings(t, received_at=RECEIVED) == []


def test_kpa_and_cuff_pressure() -> None:
    rs = to_readings(
        BloodPressureMeasurement(Number(160, -1), Number(107, -1), Number(125, -1), PressureUnit.KPA),
        received_at=RECEIVED,
    )
    assert [(r.value, r.unit) for r in rs] == [(16.0, "kPa"), (10.7, "kPa"), (12.5, "kPa")]
    (cuff,) = to_readings(IntermediateCuffPressure(Number(150, 0)), received_at=RECEIVED)
    assert (cuff.metric, cuff.value, cuff.flags) == ("cuff_pressure", 150.0, {"intermediate": True})


def test_temperature_and_unknown_timestamp() -> None:
    (r,) = to_readings(
        TemperatureMeasurement(Number(986, -1), TemperatureUnit.FAHRENHEIT, DateTime(0, 11, 29, 8, 0, 0), 6),
        received_at=RECEIVED,
    )
    assert (r.metric, r.value, r.unit) == ("body_temperature", 98.6, "[degF]")
    assert r.measured_at == RECEIVED
    assert r.device_time is None
    assert r.flags == {"device_time_invalid": True, "temperature_type": "mouth"}


def test_plx_readings() -> None:
    spot = PlxSpotCheckMeasurement(
        Number(1000, -1), Number(66, 0), TS, None, PlxDeviceSensorStatus.LOW_PERFUSION_DETECTED, Number(21, -1), True
    )
    rs = to_readings(spot, received_at=RECEIVED)
    assert [(r.metric, r.value, r.unit) for r in rs] == [
        ("spo2", 100.0, "%"),
        ("pulse_rate", 66.0, "/min"),
        ("pulse_amplitude_index", 2.1, "%"),
    ]
    assert rs[0].measured_at == RECEIVED  # device clock not set: its timestamp is not used
    assert rs[0].flags == {"low_perfusion_detected": True, "device_clock_not_set": True}
    cont = to_readings(PlxContinuousMeasurement(Number(95, 0), NAN), received_at=RECEIVED)
    assert [(r.metric, r.flags) for r in cont] == [("spo2", {"continuous": True, "pulse_rate_unavailable": "NaN"})]


def test_weight_readings() -> None:
    rs = to_readings(WeightMeasurement(70.0, False, TS, 2, 22.9, 1.75), received_at=RECEIVED)
    assert [(r.metric, r.value, r.unit) for r in rs] == [
        ("body_weight", 70.0, "kg"),
        ("bmi", 22.9, "kg/m2"),
        ("body_height", 1.75, "m"),
    ]
    rs = to_readings(WeightMeasurement(154.32, True), received_at=RECEIVED)
    assert [(r.value, r.unit) for r in rs] == [(154.32, "[lb_av]")]
    assert to_readings(WeightMeasurement(None), received_at=RECEIVED) == []


def test_glucose_readings() -> None:
    m = GlucoseMeasurement(
        12, TS, 15, Number(95, -5), False, 1, 1, GlucoseSensorStatus.RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS
    )
    (r,) = to_readings(m, received_at=RECEIVED, clock_offset=OFFSET)
    assert (r.metric, r.value, r.unit) == ("glucose", 95.0, "mg/dL")  # 95e-5 kg/L x 100000, exact
    assert r.device_time == datetime(2026, 11, 29, 11, 15, 0)
    assert r.measured_at == datetime(2026, 11, 29, 10, 15, 2, tzinfo=UTC)
    assert r.flags == {
        "sequence_number": 12,
        "sample_type": "capillary_whole_blood",
        "sample_location": "finger",
        "result_higher_than_device_can_process": True,
    }
    (mmol,) = to_readings(GlucoseMeasurement(13, TS, None, Number(53, -4), True, 8, 2), received_at=RECEIVED)
    assert (mmol.value, mmol.unit) == (5.3, "mmol/L")
    control = GlucoseMeasurement(14, TS, None, Number(95, -5), False, 10, 4)
    assert to_readings(control, received_at=RECEIVED) == []
    assert to_readings(GlucoseMeasurement(15, TS), received_at=RECEIVED) == []
    assert to_readings(GlucoseContext(12), received_at=RECEIVED) == []


def test_cgm_readings() -> None:
    m = CgmMeasurement(
        (
            CgmRecord(Number(120, 0), 10, e2e_crc=True, crc_ok=True),
            CgmRecord(Number(125, 0), 15, trend=Number(10, -1)),
            CgmRecord(Number(999, 0), 20, e2e_crc=True, crc_ok=False),  # bad CRC: not trusted
        )
    )
    rs = to_readings(m, received_at=RECEIVED)
    assert [(r.value, r.measured_at) for r in rs] == [
        (120.0, RECEIVED - timedelta(minutes=10)),
        (125.0, RECEIVED - timedelta(minutes=5)),
    ]
    assert rs[1].flags == {"time_offset_min": 15, "time_estimated": True, "trend_mg_dl_min": "1.0"}
    start = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
    rs = to_readings(m, received_at=RECEIVED, session_start=start)
    assert [r.measured_at for r in rs] == [start + timedelta(minutes=10), start + timedelta(minutes=15)]
    assert rs[0].group != rs[1].group


def test_errors() -> None:
    with pytest.raises(ValueError):
        to_readings(HeartRateMeasurement(60), received_at=datetime(2026, 1, 1))
    with pytest.raises(TypeError):
        to_readings(object(), received_at=RECEIVED)


def test_reading_json() -> None:
    (r,) = to_readings(TemperatureMeasurement(Number(369, -1), timestamp=TS), received_at=RECEIVED)
    assert r.to_json() == {
        "metric": "body_temperature",
        "value": 36.9,
        "unit": "Cel",
        "measured_at": "2026-11-29T11:00:00Z",
        "device_time": "2026-11-29T11:00:00",
        "flags": {},
        "group": r.group,
    }


@settings(max_examples=60)
@given(
    S.heart_rates()
    | S.blood_pressures
    | S.cuff_pressures
    | S.temperatures()
    | S.plx_spot_checks
    | S.plx_continuous()
    | S.weights()
    | S.glucose_measurements()
    | S.cgm_measurements
)
def test_readings_are_valid_for_any_measurement(m: object) -> None:
    for r in to_readings(m, received_at=RECEIVED, clock_offset=OFFSET):
        assert isinstance(r, Reading)
        assert is_valid_unit(r.metric, r.unit), r
        assert r.value == r.value  # never NaN
        assert abs(r.value) != float("inf")
        assert r.measured_at is not None
        assert r.measured_at.tzinfo is not None
