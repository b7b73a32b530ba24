"""Glucose: Glucose Measurement 0x2A18, Glucose Measurement Context 0x2A34 (both notified), Glucose Feature 0x2A51.

GLS v1.0.1 §3.106-§3.108 / GSS:
- Measurement: flags u8 (bit 0 time offset present, bit 1 glucose concentration + type-sample location present, bit 2
  concentration units 0 kg/L 1 mol/L, bit 3 sensor status annunciation present, bit 4 context information follows; bits
  5-7 reserved); sequence number u16; base time (Date Time, always); [time offset s16, minutes];
  [concentration SFLOAT; type (low nibble) and sample location (high nibble) u8]; [sensor status annunciation u16].
- Type: 1 capillary whole blood, 2 capillary plasma, 3 venous whole blood, 4 venous plasma, 5 arterial whole blood,
  6 arterial plasma, 7 undetermined whole blood, 8 undetermined plasma, 9 interstitial fluid, 10 control solution.
  Location: 1 finger, 2 alternate site test, 3 earlobe, 4 control solution, 15 not available.
- Sensor status annunciation: see :class:`GlucoseSensorStatus`. Bit 5 is "result HIGHER than the device can process"
  and bit 6 "LOWER" (GLS; Wireshark and ARM Cordio agree; Nordic's Android library swaps them).
- Context: flags u8 (bit 0 carbohydrate, bit 1 meal, bit 2 tester-health, bit 3 exercise, bit 4 medication, bit 5
  medication units 0 kg 1 L, bit 6 HbA1c, bit 7 extended flags); sequence number u16; [extended flags u8];
  [carbohydrate id u8 + carbohydrate SFLOAT kg]; [meal u8]; [tester (low nibble) / health (high nibble) u8];
  [exercise duration u16 s (0xFFFF overrun) + exercise intensity u8 %]; [medication id u8 + medication SFLOAT kg or L];
  [HbA1c SFLOAT %].
- Feature: u16 bits 0-10 (:class:`GlucoseFeatureBits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from devices.datetime_field import DateTime
from devices.gatt._wire import Reader, Writer, as_bytes
from devices.ieee11073 import Number


class GlucoseSensorStatus(IntFlag):
    """Sensor status annunciation bits (GLS §3.106.1.5); bits 12-15 reserved."""

    DEVICE_BATTERY_LOW = 1 << 0
    SENSOR_MALFUNCTION = 1 << 1
    SAMPLE_SIZE_INSUFFICIENT = 1 << 2
    STRIP_INSERTION_ERROR = 1 << 3
    STRIP_TYPE_INCORRECT = 1 << 4
    RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS = 1 << 5
    RESULT_LOWER_THAN_DEVICE_CAN_PROCESS = 1 << 6
    SENSOR_TEMPERATURE_TOO_HIGH = 1 << 7
    SENSOR_TEMPERATURE_TOO_LOW = 1 << 8
    READ_INTERRUPTED = 1 << 9
    GENERAL_DEVICE_FAULT = 1 << 10
    TIME_FAULT = 1 << 11


class SampleType(IntEnum):
    """Glucose sample type (low nibble)."""

    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class SampleLocation(IntEnum):
    """Glucose sample location (high nibble)."""

    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    NOT_AVAILABLE = 15


class GlucoseFeatureBits(IntFlag):
    """Glucose Feature (GLS §3.108); bits 11-15 reserved."""

    LOW_BATTERY_DETECTION = 1 << 0
    SENSOR_MALFUNCTION_DETECTION = 1 << 1
    SENSOR_SAMPLE_SIZE = 1 << 2
    SENSOR_STRIP_INSERTION_ERROR_DETECTION = 1 << 3
    SENSOR_STRIP_TYPE_ERROR_DETECTION = 1 << 4
    SENSOR_RESULT_HIGH_LOW_DETECTION = 1 << 5
    SENSOR_TEMPERATURE_HIGH_LOW_DETECTION = 1 << 6
    SENSOR_READ_INTERRUPT_DETECTION = 1 << 7
    GENERAL_DEVICE_FAULT = 1 << 8
    TIME_FAULT = 1 << 9
    MULTIPLE_BOND = 1 << 10


def enum_name(kind: type[IntEnum], value: int | None) -> str | None:
    """Snake-case name of an enum value, ``"reserved"`` when unknown, ``None`` for ``None``."""
    if value is None:
        return None
    try:
        return kind(value).name.lower()
    except ValueError:
        return "reserved"


@dataclass(frozen=True, slots=True)
class GlucoseMeasurement:
    """One Glucose Measurement (0x2A18)."""

    sequence_number: int
    base_time: DateTime
    time_offset_min: int | None = None
    concentration: Number | None = None
    """In kg/L (``mol_per_l=False``) or mol/L; present with ``sample_type`` and ``sample_location``."""
    mol_per_l: bool = False
    sample_type: int | None = None
    sample_location: int | None = None
    sensor_status: GlucoseSensorStatus | None = None
    context_follows: bool = False

    @property
    def concentration_unit(self) -> str:
        """``"mol/L"`` or ``"kg/L"`` (flags bit 2)."""
        return "mol/L" if self.mol_per_l else "kg/L"

    @property
    def is_control_solution(self) -> bool:
        """A control-solution test, not a patient sample (type 10 or location 4)."""
        return (
            self.sample_type == SampleType.CONTROL_SOLUTION or self.sample_location == SampleLocation.CONTROL_SOLUTION
        )


@dataclass(frozen=True, slots=True)
class GlucoseContext:
    """One Glucose Measurement Context (0x2A34), matched to a measurement by sequence number."""

    sequence_number: int
    extended_flags: int | None = None
    carbohydrate_id: int | None = None
    carbohydrate_kg: Number | None = None
    meal: int | None = None
    tester: int | None = None
    health: int | None = None
    exercise_duration_s: int | None = None
    exercise_intensity_pct: int | None = None
    medication_id: int | None = None
    medication: Number | None = None
    medication_in_liters: bool = False
    hba1c_pct: Number | None = None


@dataclass(frozen=True, slots=True)
class GlucoseFeature:
    """Glucose Feature (0x2A51)."""

    features: GlucoseFeatureBits


def decode_glucose_measurement(data: bytes) -> GlucoseMeasurement:
    """Decode a 0x2A18 value."""
    r = Reader(as_bytes(data))
    flags = r.u8("flags")
    seq = r.u16("sequence_number")
    base = r.date_time("base_time")
    offset = r.s16("time_offset") if flags & 0x01 else None
    conc = kind = location = None
    if flags & 0x02:
        conc = r.sfloat("concentration")
        type_location = r.u8("type_sample_location")
        kind, location = type_location & 0x0F, type_location >> 4
    status = GlucoseSensorStatus(r.u16("sensor_status") & 0x0FFF) if flags & 0x08 else None
    return GlucoseMeasurement(seq, base, offset, conc, bool(flags & 0x04), kind, location, status, bool(flags & 0x10))


def encode_glucose_measurement(m: GlucoseMeasurement) -> bytes:
    """Encode a 0x2A18 value (``sample_type``/``sample_location`` default to 0 when only a concentration is given)."""
    flags = (0x01 if m.time_offset_min is not None else 0) | (0x02 if m.concentration is not None else 0)
    flags |= (0x04 if m.mol_per_l else 0) | (0x08 if m.sensor_status is not None else 0)
    flags |= 0x10 if m.context_follows else 0
    w = Writer()
    w.u8(flags, "flags")
    w.u16(m.sequence_number, "sequence_number")
    w.date_time(m.base_time, "base_time")
    if m.time_offset_min is not None:
        w.s16(m.time_offset_min, "time_offset")
    if m.concentration is not None:
        w.sfloat(m.concentration)
        kind, location = m.sample_type or 0, m.sample_location or 0
        if not (0 <= kind <= 0x0F and 0 <= location <= 0x0F):
            w.u8(256, "type_sample_location")  # raises EncodeError
        w.u8(location << 4 | kind, "type_sample_location")
    if m.sensor_status is not None:
        w.u16(int(m.sensor_status), "sensor_status")
    return w.bytes()


def decode_glucose_context(data: bytes) -> GlucoseContext:
    """Decode a 0x2A34 value."""
    r = Reader(as_bytes(data))
    flags = r.u8("flags")
    seq = r.u16("sequence_number")
    ext = r.u8("extended_flags") if flags & 0x80 else None
    carb_id = carb = meal = tester = health = duration = intensity = med_id = med = hba1c = None
    if flags & 0x01:
        carb_id = r.u8("carbohydrate_id")
        carb = r.sfloat("carbohydrate")
    if flags & 0x02:
        meal = r.u8("meal")
    if flags & 0x04:
        tester_health = r.u8("tester_health")
        tester, health = tester_health & 0x0F, tester_health >> 4
    if flags & 0x08:
        duration = r.u16("exercise_duration")
        intensity = r.u8("exercise_intensity")
    if flags & 0x10:
        med_id = r.u8("medication_id")
        med = r.sfloat("medication")
    if flags & 0x40:
        hba1c = r.sfloat("hba1c")
    return GlucoseContext(
        seq, ext, carb_id, carb, meal, tester, health, duration, intensity, med_id, med, bool(flags & 0x20), hba1c
    )


def encode_glucose_context(c: GlucoseContext) -> bytes:
    """Encode a 0x2A34 value (carbohydrate, exercise and medication fields go in pairs)."""
    carb = c.carbohydrate_id is not None or c.carbohydrate_kg is not None
    health = c.tester is not None or c.health is not None
    exercise = c.exercise_duration_s is not None or c.exercise_intensity_pct is not None
    med = c.medication_id is not None or c.medication is not None
    flags = (0x01 if carb else 0) | (0x02 if c.meal is not None else 0) | (0x04 if health else 0)
    flags |= (0x08 if exercise else 0) | (0x10 if med else 0) | (0x20 if c.medication_in_liters else 0)
    flags |= (0x40 if c.hba1c_pct is not None else 0) | (0x80 if c.extended_flags is not None else 0)
    w = Writer()
    w.u8(flags, "flags")
    w.u16(c.sequence_number, "sequence_number")
    nan = float("nan")
    if c.extended_flags is not None:
        w.u8(c.extended_flags, "extended_flags")
    if carb:
        w.u8(c.carbohydrate_id or 0, "carbohydrate_id")
        w.sfloat(nan if c.carbohydrate_kg is None else c.carbohydrate_kg)
    if c.meal is not None:
        w.u8(c.meal, "meal")
    if health:
        tester, state = c.tester or 0, c.health or 0
        if not (0 <= tester <= 0x0F and 0 <= state <= 0x0F):
            w.u8(256, "tester_health")  # raises EncodeError
        w.u8(state << 4 | tester, "tester_health")
    if exercise:
        w.u16(c.exercise_duration_s or 0, "exercise_duration")
        w.u8(c.exercise_intensity_pct or 0, "exercise_intensity")
    if med:
        w.u8(c.medication_id or 0, "medication_id")
        w.sfloat(nan if c.medication is None else c.medication)
    if c.hba1c_pct is not None:
        w.sfloat(c.hba1c_pct)
    return w.bytes()


def decode_glucose_feature(data: bytes) -> GlucoseFeature:
    """Decode a 0x2A51 value (u16)."""
    r = Reader(as_bytes(data))
    raw = r.u16("glucose_feature")
    return GlucoseFeature(GlucoseFeatureBits(raw & 0x07FF))


def encode_glucose_feature(f: GlucoseFeature) -> bytes:
    """Encode a 0x2A51 value."""
    w = Writer()
    w.u16(int(f.features), "glucose_feature")
    return w.bytes()


__all__ = [
    "GlucoseContext",
    "GlucoseFeature",
    "GlucoseFeatureBits",
    "GlucoseMeasurement",
    "GlucoseSensorStatus",
    "SampleLocation",
    "SampleType",
    "decode_glucose_context",
    "decode_glucose_feature",
    "decode_glucose_measurement",
    "encode_glucose_context",
    "encode_glucose_feature",
    "encode_glucose_measurement",
    "enum_name",
]
