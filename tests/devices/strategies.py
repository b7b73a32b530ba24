"""Hypothesis strategies for every decoded value of ``devices.gatt`` (valid values: they must round trip)."""

from __future__ import annotations

from hypothesis import strategies as st

from devices.datetime_field import DateTime
from devices.gatt.blood_pressure import (
    BloodPressureMeasurement,
    BloodPressureStatus,
    IntermediateCuffPressure,
    PressureUnit,
    PulseRateRange,
)
from devices.gatt.cgm import CgmMeasurement, CgmRecord
from devices.gatt.current_time import BatteryLevel, CurrentTime
from devices.gatt.glucose import (
    GlucoseContext,
    GlucoseFeature,
    GlucoseFeatureBits,
    GlucoseMeasurement,
    GlucoseSensorStatus,
)
from devices.gatt.heart_rate import HeartRateMeasurement
from devices.gatt.plx import (
    PlxContinuousMeasurement,
    PlxDeviceSensorStatus,
    PlxFeatures,
    PlxMeasurementStatus,
    PlxSpotCheckMeasurement,
)
from devices.gatt.racp import FilterType, OpCode, RacpMessage
from devices.gatt.temperature import TemperatureMeasurement, TemperatureTypeValue, TemperatureUnit
from devices.gatt.weight import WeightMeasurement, WeightScaleFeature
from devices.ieee11073 import Number, Special, decode_float, decode_sfloat

sfloats = st.integers(0, 0xFFFF).map(decode_sfloat)
floats32 = st.integers(0, 0xFFFFFFFF).map(decode_float)
finite_sfloats = sfloats.filter(lambda n: n.special is None)
specials = st.sampled_from(list(Special)).map(Number.of_special)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)

date_times = st.builds(DateTime, u16, u8, u8, u8, u8, u8)


@st.composite
def heart_rates(draw: st.DrawFn) -> HeartRateMeasurement:
    wide = draw(st.booleans())
    hr = draw(u16 if wide else u8)
    return HeartRateMeasurement(
        heart_rate=hr,
        sensor_contact=draw(st.none() | st.booleans()),
        energy_expended_kj=draw(st.none() | u16),
        rr_intervals=tuple(draw(st.lists(u16, max_size=9))),
        uint16_format=wide,
    )


bp_statuses = st.builds(
    BloodPressureStatus,
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from(list(PulseRateRange)),
    st.booleans(),
)
blood_pressures = st.builds(
    BloodPressureMeasurement,
    sfloats,
    sfloats,
    sfloats,
    st.sampled_from(list(PressureUnit)),
    st.none() | date_times,
    st.none() | sfloats,
    st.none() | u8,
    st.none() | bp_statuses,
)
cuff_pressures = st.builds(
    IntermediateCuffPressure,
    sfloats,
    st.sampled_from(list(PressureUnit)),
    st.none() | date_times,
    st.none() | sfloats,
    st.none() | u8,
    st.none() | bp_statuses,
    sfloats,
    sfloats,
)


# --- temperature, PLX, weight, glucose, CGM, RACP -------------------------------------------------------------------
nibble = st.integers(0, 15)


def temperatures(intermediate: bool = False) -> st.SearchStrategy[TemperatureMeasurement]:
    return st.builds(
        TemperatureMeasurement,
        floats32,
        st.sampled_from(list(TemperatureUnit)),
        st.none() | date_times,
        st.none() | u8,
        st.just(intermediate),
    )


temperature_types = st.builds(TemperatureTypeValue, u8)
plx_ms = st.integers(0, 0xFFFF).map(lambda v: PlxMeasurementStatus(v & 0xFFE0))
plx_dss = st.integers(0, 0xFFFF).map(PlxDeviceSensorStatus)
plx_spot_checks = st.builds(
    PlxSpotCheckMeasurement,
    sfloats,
    sfloats,
    st.none() | date_times,
    st.none() | plx_ms,
    st.none() | plx_dss,
    st.none() | sfloats,
    st.booleans(),
)


@st.composite
def plx_continuous(draw: st.DrawFn) -> PlxContinuousMeasurement:
    fast = draw(st.none() | st.tuples(sfloats, sfloats))
    slow = draw(st.none() | st.tuples(sfloats, sfloats))
    fs, fp = fast or (None, None)
    ss, sp = slow or (None, None)
    return PlxContinuousMeasurement(
        draw(sfloats),
        draw(sfloats),
        fs,
        fp,
        ss,
        sp,
        draw(st.none() | plx_ms),
        draw(st.none() | plx_dss),
        draw(st.none() | sfloats),
    )


plx_features = st.builds(
    PlxFeatures,
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.none() | plx_ms,
    st.none() | plx_dss,
)


@st.composite
def weights(draw: st.DrawFn) -> WeightMeasurement:
    imperial = draw(st.booleans())
    raw = draw(st.none() | st.integers(0, 0xFFFE))
    weight = None if raw is None else raw / (100 if imperial else 200)
    bmi_height = draw(st.none() | st.tuples(u16, u16))
    bmi = height = None
    if bmi_height is not None:
        bmi = bmi_height[0] / 10
        height = bmi_height[1] / (10 if imperial else 1000)
    return WeightMeasurement(weight, imperial, draw(st.none() | date_times), draw(st.none() | u8), bmi, height)


weight_features = st.builds(WeightScaleFeature, st.booleans(), st.booleans(), st.booleans(), nibble, st.integers(0, 7))


@st.composite
def glucose_measurements(draw: st.DrawFn) -> GlucoseMeasurement:
    conc = draw(st.none() | sfloats)
    kind = location = None
    if conc is not None:
        kind, location = draw(nibble), draw(nibble)
    return GlucoseMeasurement(
        draw(u16),
        draw(date_times),
        draw(st.none() | st.integers(-0x8000, 0x7FFF)),
        conc,
        draw(st.booleans()),
        kind,
        location,
        draw(st.none() | st.integers(0, 0x0FFF).map(GlucoseSensorStatus)),
        draw(st.booleans()),
    )


@st.composite
def glucose_contexts(draw: st.DrawFn) -> GlucoseContext:
    carb = draw(st.none() | st.tuples(u8, sfloats))
    health = draw(st.none() | st.tuples(nibble, nibble))
    exercise = draw(st.none() | st.tuples(u16, u8))
    med = draw(st.none() | st.tuples(u8, sfloats))
    carb_id, carb_kg = carb or (None, None)
    tester, state = health or (None, None)
    duration, intensity = exercise or (None, None)
    med_id, med_value = med or (None, None)
    return GlucoseContext(
        draw(u16),
        draw(st.none() | u8),
        carb_id,
        carb_kg,
        draw(st.none() | u8),
        tester,
        state,
        duration,
        intensity,
        med_id,
        med_value,
        draw(st.booleans()),
        draw(st.none() | sfloats),
    )


glucose_features = st.integers(0, 0x07FF).map(lambda v: GlucoseFeature(GlucoseFeatureBits(v)))


@st.composite
def cgm_records(draw: st.DrawFn) -> CgmRecord:
    crc = draw(st.booleans())
    return CgmRecord(
        draw(sfloats),
        draw(u16),
        draw(st.none() | u8),
        draw(st.none() | u8),
        draw(st.none() | u8),
        draw(st.none() | sfloats),
        draw(st.none() | sfloats),
        crc,
        True if crc else None,
    )


cgm_measurements = st.lists(cgm_records(), min_size=1, max_size=4).map(lambda rs: CgmMeasurement(tuple(rs)))


@st.composite
def racp_messages(draw: st.DrawFn) -> RacpMessage:
    kind = draw(st.sampled_from(["simple", "filter", "response", "count", "raw"]))
    if kind == "simple":
        op = draw(st.sampled_from([1, 2, 3, 4, 7]))
        operator = draw(st.sampled_from([0, 1, 5, 6]))
        return RacpMessage(op, operator)
    if kind == "filter":
        op = draw(st.sampled_from([1, 2, 4, 7]))
        operator = draw(st.sampled_from([2, 3, 4]))
        ftype = draw(st.sampled_from([FilterType.SEQUENCE_NUMBER, FilterType.USER_FACING_TIME]))
        value: st.SearchStrategy[int | DateTime] = u16 if ftype == FilterType.SEQUENCE_NUMBER else date_times
        lo = draw(value) if operator in (3, 4) else None
        hi = draw(value) if operator in (2, 4) else None
        return RacpMessage(op, operator, int(ftype), lo, hi)
    if kind == "response":
        return RacpMessage(OpCode.RESPONSE_CODE, draw(u8), request_op_code=draw(u8), response_code=draw(u8))
    if kind == "count":
        return RacpMessage(OpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, draw(u8), count=draw(st.integers(0, 0xFFFFFFFF)))
    op = draw(st.integers(9, 255) | st.just(0))
    return RacpMessage(op, draw(u8), operand=draw(st.binary(max_size=8)))


current_times = st.builds(CurrentTime, date_times, u8, u8, u8)
battery_levels = st.builds(BatteryLevel, u8)
