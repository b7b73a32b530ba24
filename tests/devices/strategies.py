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
from devices.gatt.heart_rate import HeartRateMeasurement
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
