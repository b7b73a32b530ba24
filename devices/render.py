"""JSON views of decoded characteristic values (the output of ``tbib decode``; field names are a public contract).

Numbers from SFLOAT/FLOAT fields are plain JSON numbers, or null when the device sent a special value; the special's
name is then listed under ``"specials"`` (``{"diastolic": "NaN"}``). Date Time fields are objects with the fields as
sent (``year, month, day, hours, minutes, seconds``). Flag sets are lists of snake_case names in bit order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devices.datetime_field import DateTime
from devices.gatt.blood_pressure import BloodPressureMeasurement, IntermediateCuffPressure
from devices.gatt.cgm import CgmMeasurement, CgmRecord
from devices.gatt.current_time import BatteryLevel, CurrentTime
from devices.gatt.glucose import (
    GlucoseContext,
    GlucoseFeature,
    GlucoseMeasurement,
    SampleLocation,
    SampleType,
    enum_name,
)
from devices.gatt.heart_rate import HeartRateMeasurement
from devices.gatt.plx import PlxContinuousMeasurement, PlxFeatures, PlxSpotCheckMeasurement, flag_names
from devices.gatt.racp import FilterType, OpCode, Operator, RacpMessage, ResponseCode, code_name
from devices.gatt.temperature import TemperatureMeasurement, TemperatureTypeValue, temperature_type_name
from devices.gatt.weight import WeightMeasurement, WeightScaleFeature
from devices.ieee11073 import Number

Json = dict[str, Any]


def number_json(n: Number) -> Json:
    """``{"value", "special", "mantissa", "exponent"}`` of one IEEE 11073 number."""
    return {
        "value": n.value if n.special is None else None,
        "special": None if n.special is None else n.special.value,
        "mantissa": n.mantissa if n.special is None else None,
        "exponent": n.exponent if n.special is None else None,
    }


class _Numbers:
    """Collects the specials met while rendering the numeric fields of one object."""

    def __init__(self) -> None:
        self.specials: dict[str, str] = {}

    def __call__(self, name: str, n: Number | None) -> float | None:
        if n is None:
            return None
        if n.special is not None:
            self.specials[name] = n.special.value
            return None
        return n.value


def _dt(value: DateTime | None) -> Json | None:
    return None if value is None else value.to_json()


def _heart_rate(m: HeartRateMeasurement) -> Json:
    return {
        "heart_rate": m.heart_rate,
        "heart_rate_format": "uint16" if m.uint16_format else "uint8",
        "sensor_contact": m.sensor_contact,
        "sensor_contact_supported": m.sensor_contact is not None,
        "energy_expended_kj": m.energy_expended_kj,
        "rr_intervals_s": list(m.rr_intervals_s) if m.rr_intervals else None,
        "rr_intervals_1024": list(m.rr_intervals) if m.rr_intervals else None,
    }


def _blood_pressure(m: BloodPressureMeasurement | IntermediateCuffPressure) -> Json:
    num = _Numbers()
    out: Json = {"unit": m.unit.value}
    if isinstance(m, BloodPressureMeasurement):
        out["systolic"] = num("systolic", m.systolic)
    else:
        out["cuff_pressure"] = num("cuff_pressure", m.cuff_pressure)
        out["systolic"] = out["cuff_pressure"]  # same wire field (BLS §3.2)
    out |= {
        "diastolic": num("diastolic", m.diastolic),
        "mean_arterial_pressure": num("mean_arterial_pressure", m.mean_arterial_pressure),
        "timestamp": _dt(m.timestamp),
        "pulse_rate": num("pulse_rate", m.pulse_rate),
        "user_id": m.user_id,
        "measurement_status": None if m.measurement_status is None else m.measurement_status.to_json(),
        "specials": num.specials,
    }
    return out


def _temperature(m: TemperatureMeasurement) -> Json:
    num = _Numbers()
    return {
        "unit": m.unit.value,
        "temperature": num("temperature", m.temperature),
        "timestamp": _dt(m.timestamp),
        "temperature_type": m.temperature_type,
        "temperature_type_name": temperature_type_name(m.temperature_type),
        "specials": num.specials,
    }


def _plx(m: PlxSpotCheckMeasurement | PlxContinuousMeasurement) -> Json:
    num = _Numbers()
    out: Json = {"spo2": num("spo2", m.spo2), "pulse_rate": num("pulse_rate", m.pulse_rate)}
    if isinstance(m, PlxContinuousMeasurement):
        out |= {
            "spo2_fast": num("spo2_fast", m.spo2_fast),
            "pulse_rate_fast": num("pulse_rate_fast", m.pulse_rate_fast),
            "spo2_slow": num("spo2_slow", m.spo2_slow),
            "pulse_rate_slow": num("pulse_rate_slow", m.pulse_rate_slow),
            "timestamp": None,
        }
    else:
        out |= {
            "spo2_fast": None,
            "pulse_rate_fast": None,
            "spo2_slow": None,
            "pulse_rate_slow": None,
            "timestamp": _dt(m.timestamp),
            "device_clock_not_set": m.device_clock_not_set,
        }
    out |= {
        "measurement_status": flag_names(m.measurement_status),
        "device_sensor_status": flag_names(m.device_sensor_status),
        "pulse_amplitude_index": num("pulse_amplitude_index", m.pulse_amplitude_index),
        "specials": num.specials,
    }
    return out


def _plx_features(f: PlxFeatures) -> Json:
    return {
        "measurement_status_support": flag_names(f.measurement_status_support),
        "device_sensor_status_support": flag_names(f.device_sensor_status_support),
        "measurement_storage_spot_check": f.measurement_storage_spot_check,
        "timestamp_spot_check": f.timestamp_spot_check,
        "spo2pr_fast": f.spo2pr_fast,
        "spo2pr_slow": f.spo2pr_slow,
        "pulse_amplitude_index": f.pulse_amplitude_index,
        "multiple_bonds": f.multiple_bonds,
    }


def _weight(m: WeightMeasurement) -> Json:
    return {
        "unit": m.unit,
        "weight": m.weight,
        "measurement_unsuccessful": m.weight is None,
        "timestamp": _dt(m.timestamp),
        "user_id": m.user_id,
        "bmi": m.bmi,
        "height": m.height,
        "height_unit": m.height_unit,
    }


def _weight_feature(f: WeightScaleFeature) -> Json:
    return {
        "timestamp_supported": f.timestamp_supported,
        "multiple_users_supported": f.multiple_users_supported,
        "bmi_supported": f.bmi_supported,
        "weight_resolution": f.weight_resolution,
        "height_resolution": f.height_resolution,
    }


def _glucose(m: GlucoseMeasurement) -> Json:
    num = _Numbers()
    return {
        "sequence_number": m.sequence_number,
        "base_time": _dt(m.base_time),
        "time_offset_min": m.time_offset_min,
        "concentration": num("concentration", m.concentration),
        "concentration_unit": m.concentration_unit,
        "sample_type": m.sample_type,
        "sample_location": m.sample_location,
        "sample_type_name": enum_name(SampleType, m.sample_type),
        "sample_location_name": enum_name(SampleLocation, m.sample_location),
        "sensor_status": flag_names(m.sensor_status),
        "context_follows": m.context_follows,
        "control_solution": m.is_control_solution,
        "specials": num.specials,
    }


def _glucose_context(c: GlucoseContext) -> Json:
    num = _Numbers()
    return {
        "sequence_number": c.sequence_number,
        "extended_flags": c.extended_flags,
        "carbohydrate_id": c.carbohydrate_id,
        "carbohydrate_kg": num("carbohydrate_kg", c.carbohydrate_kg),
        "meal": c.meal,
        "tester": c.tester,
        "health": c.health,
        "exercise_duration_s": c.exercise_duration_s,
        "exercise_intensity_pct": c.exercise_intensity_pct,
        "medication_id": c.medication_id,
        "medication": num("medication", c.medication),
        "medication_unit": None if c.medication is None else ("L" if c.medication_in_liters else "kg"),
        "hba1c_pct": num("hba1c_pct", c.hba1c_pct),
        "specials": num.specials,
    }


def _cgm_record(r: CgmRecord) -> Json:
    num = _Numbers()
    return {
        "glucose": num("glucose", r.glucose),
        "time_offset_min": r.time_offset_min,
        "trend": num("trend", r.trend),
        "quality": num("quality", r.quality),
        "warning_octet": r.warning_octet,
        "cal_temp_octet": r.cal_temp_octet,
        "status_octet": r.status_octet,
        "crc_ok": r.crc_ok,
        "specials": num.specials,
    }


def _racp(m: RacpMessage) -> Json:
    def bound(value: int | DateTime | None) -> int | Json | None:
        return value.to_json() if isinstance(value, DateTime) else value

    return {
        "op_code": code_name(OpCode, m.op_code),
        "op_code_value": m.op_code,
        "operator": code_name(Operator, m.operator),
        "operator_value": m.operator,
        "filter_type": code_name(FilterType, m.filter_type),
        "minimum": bound(m.minimum),
        "maximum": bound(m.maximum),
        "request_op_code": code_name(OpCode, m.request_op_code),
        "request_op_code_value": m.request_op_code,
        "response_code": code_name(ResponseCode, m.response_code),
        "response_code_value": m.response_code,
        "count": m.count,
        "operand": m.operand.hex() if m.operand else None,
    }


_RENDERERS: dict[type, Callable[[Any], Json]] = {
    HeartRateMeasurement: _heart_rate,
    BloodPressureMeasurement: _blood_pressure,
    IntermediateCuffPressure: _blood_pressure,
    TemperatureMeasurement: _temperature,
    TemperatureTypeValue: lambda t: {
        "temperature_type": t.temperature_type,
        "temperature_type_name": temperature_type_name(t.temperature_type),
    },
    PlxSpotCheckMeasurement: _plx,
    PlxContinuousMeasurement: _plx,
    PlxFeatures: _plx_features,
    WeightMeasurement: _weight,
    WeightScaleFeature: _weight_feature,
    GlucoseMeasurement: _glucose,
    GlucoseContext: _glucose_context,
    GlucoseFeature: lambda f: {"features": flag_names(f.features)},
    CgmMeasurement: lambda m: {"records": [_cgm_record(r) for r in m.records]},
    RacpMessage: _racp,
    DateTime: lambda d: d.to_json() | {"known": d.is_known},
    CurrentTime: lambda c: {
        "date_time": c.date_time.to_json(),
        "day_of_week": c.day_of_week,
        "fractions256": c.fractions256,
        "adjust_reason": c.adjust_reason,
    },
    BatteryLevel: lambda b: {"battery_level": b.percent},
}


def to_json(value: object) -> Json:
    """The JSON object of a decoded characteristic value; ``TypeError`` for other objects."""
    renderer = _RENDERERS.get(type(value))
    if renderer is None:
        raise TypeError(f"no JSON view for {type(value).__name__}")
    return renderer(value)
