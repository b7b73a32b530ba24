"""Decoded measurements -> normalized :class:`Reading` values (metric, value, UCUM unit, time, flags, group).

Contract:
- Metrics and units come from :mod:`devices.codes`. Units are kept as the device reported them when they are valid UCUM
  units of the metric (``mm[Hg]`` or ``kPa``, ``Cel`` or ``[degF]``, ``kg`` or ``[lb_av]``): no rounding artefacts; use
  :func:`devices.codes.to_canonical` to compare against thresholds. Glucose becomes mg/dL (kg/L x 100 000) or mmol/L
  (mol/L x 1 000), computed exactly from the SFLOAT mantissa.
- Time: ``device_time`` is the device's wall clock exactly as reported (naive). ``measured_at`` (aware UTC) is
  ``device_time + clock_offset`` read as UTC, where ``clock_offset`` = gateway UTC clock minus the device clock read as
  if it were UTC (so it absorbs both the device's zone and its drift). Without a usable device timestamp (absent, a
  "not known" field, PLX "device clock not set") ``measured_at`` is ``received_at``.
- Special values (NaN, NRes, +/-INF, reserved) never become numeric readings: the reading is skipped and the others of
  the group carry ``flags["<metric>_unavailable"] = "<special>"``.
- Control-solution glucose tests (type 10 or location 4) are not patient data: they give no reading. CGM records with a
  failed E2E-CRC give no reading either.
- ``group`` ties the readings of one measurement (BP systolic/diastolic/MAP/pulse): when not given it is a uuid5 of the
  measurement's content (plus ``received_at`` when the device gave no timestamp), so the same measurement always gets
  the same group.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from devices.datetime_field import DateTime
from devices.gatt.blood_pressure import BloodPressureMeasurement, IntermediateCuffPressure, PulseRateRange
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
from devices.gatt.racp import RacpMessage
from devices.gatt.temperature import TemperatureMeasurement, TemperatureTypeValue, temperature_type_name
from devices.gatt.weight import WeightMeasurement, WeightScaleFeature
from devices.ieee11073 import Number

FlagValue = bool | int | str
_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:tbib:devices:readings")
_NOT_MEASUREMENTS: Final = (
    GlucoseContext,
    GlucoseFeature,
    PlxFeatures,
    RacpMessage,
    TemperatureTypeValue,
    WeightScaleFeature,
    DateTime,
    CurrentTime,
    BatteryLevel,
)


@dataclass(frozen=True, slots=True)
class Reading:
    """One normalized value of one metric."""

    metric: str
    value: float
    unit: str
    measured_at: datetime | None
    """Aware UTC; None only when built by hand without a time (``to_readings`` always sets it)."""
    device_time: datetime | None
    """Naive device local time as reported, or None when the device sent no usable timestamp."""
    flags: Mapping[str, FlagValue] = field(default_factory=dict)
    group: str | None = None

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict (ISO 8601 times, ``Z`` for UTC)."""
        return {
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "measured_at": _iso_utc(self.measured_at),
            "device_time": None if self.device_time is None else self.device_time.isoformat(),
            "flags": dict(self.flags),
            "group": self.group,
        }


def _iso_utc(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class _Builder:
    received_at: datetime
    clock_offset: timedelta
    values: list[tuple[str, Number | float, str, dict[str, FlagValue]]] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)

    def add(self, metric: str, value: Number | float | None, unit: str, **extra: FlagValue) -> None:
        if value is None:
            return
        if isinstance(value, Number) and (value.special is not None):
            self.unavailable[f"{metric}_unavailable"] = value.special.value
            return
        self.values.append((metric, value, unit, dict(extra)))

    def build(
        self, device_time: datetime | None, flags: dict[str, FlagValue], group: str, *, use_device_time: bool = True
    ) -> list[Reading]:
        measured_at = self.received_at
        if device_time is not None and use_device_time:
            try:
                measured_at = (device_time + self.clock_offset).replace(tzinfo=UTC)
            except OverflowError:  # a corrupt year near 1 or 9999: fall back to the reception time
                flags = {**flags, "device_time_invalid": True}
        shared = {**flags, **self.unavailable}
        out = []
        for metric, value, unit, extra in self.values:
            number = value.value if isinstance(value, Number) else value
            assert number is not None  # specials were filtered in add()
            out.append(Reading(metric, float(number), unit, measured_at, device_time, {**shared, **extra}, group))
        return out


def _group(measurement: object, received_at: datetime, timestamped: bool) -> str:
    key = f"{type(measurement).__name__}|{measurement!r}"
    if not timestamped:
        key += f"|{received_at.isoformat()}"
    return str(uuid.uuid5(_NAMESPACE, key))


def _scaled(n: Number | None, power10: int) -> Number | None:
    """``n x 10^power10`` exactly (same mantissa, shifted exponent)."""
    if n is None or n.special is not None:
        return n
    return Number(n.mantissa, n.exponent + power10)


def to_readings(
    measurement: object,
    *,
    received_at: datetime,
    clock_offset: timedelta = timedelta(0),
    group: str | None = None,
    session_start: datetime | None = None,
) -> list[Reading]:
    """Normalized readings of a decoded measurement ([] for decoded values that carry no clinical measurement).

    ``received_at`` must be timezone-aware. ``session_start`` (aware) is the CGM session start time; without it, CGM
    records are timed relative to the newest record of the notification, taken as received now (``time_estimated``).
    Raises ``TypeError`` for objects that are not decoded characteristic values.
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    received_at = received_at.astimezone(UTC)
    b = _Builder(received_at, clock_offset)
    flags: dict[str, FlagValue] = {}
    device_time: datetime | None = None
    use_device_time = True

    def timestamp(value: DateTime | None) -> datetime | None:
        if value is None:
            return None
        dt = value.to_datetime()
        if dt is None:
            flags["device_time_invalid"] = True
        return dt

    m = measurement
    if isinstance(m, HeartRateMeasurement):
        # HRS §3.1.1.2: with sensor contact supported but not detected, the value is not the wearer's heart rate
        # (straps report 0 or a stale value): no heart_rate/RR readings, which would look like asystole to an alert.
        if m.sensor_contact is not False:
            b.add("heart_rate", float(m.heart_rate), "/min")
            for i, rr in enumerate(m.rr_intervals_s):
                b.add("rr_interval", rr, "s", rr_index=i)
        b.add("energy_expended", None if m.energy_expended_kj is None else float(m.energy_expended_kj), "kJ")
        if m.sensor_contact is not None:
            flags["sensor_contact"] = m.sensor_contact
    elif isinstance(m, BloodPressureMeasurement | IntermediateCuffPressure):
        unit = m.unit.value
        if isinstance(m, BloodPressureMeasurement):
            b.add("systolic_bp", m.systolic, unit)
            b.add("diastolic_bp", m.diastolic, unit)
            b.add("mean_arterial_pressure", m.mean_arterial_pressure, unit)
        else:
            b.add("cuff_pressure", m.cuff_pressure, unit)
            flags["intermediate"] = True
        b.add("pulse_rate", m.pulse_rate, "/min")
        device_time = timestamp(m.timestamp)
        if m.user_id is not None:
            flags["user_id"] = m.user_id
        status = m.measurement_status
        if status is not None:
            for name in ("body_movement", "cuff_too_loose", "irregular_pulse", "improper_position"):
                if getattr(status, name):
                    flags[name] = True
            if status.pulse_rate_range is not PulseRateRange.IN_RANGE:
                flags["pulse_rate_range"] = status.pulse_rate_range.label
    elif isinstance(m, TemperatureMeasurement):
        b.add("body_temperature", m.temperature, m.unit.value)
        device_time = timestamp(m.timestamp)
        site = temperature_type_name(m.temperature_type)
        if site is not None:
            flags["temperature_type"] = site
        if m.intermediate:
            flags["intermediate"] = True
    elif isinstance(m, PlxSpotCheckMeasurement | PlxContinuousMeasurement):
        b.add("spo2", m.spo2, "%")
        b.add("pulse_rate", m.pulse_rate, "/min")
        b.add("pulse_amplitude_index", m.pulse_amplitude_index, "%")
        for name in (flag_names(m.measurement_status) or []) + (flag_names(m.device_sensor_status) or []):
            flags[name] = True
        if isinstance(m, PlxSpotCheckMeasurement):
            device_time = timestamp(m.timestamp)
            if m.device_clock_not_set:
                flags["device_clock_not_set"] = True
                use_device_time = False
        else:
            flags["continuous"] = True
    elif isinstance(m, WeightMeasurement):
        if m.weight is None:
            flags["measurement_unsuccessful"] = True
        b.add("body_weight", m.weight, m.unit)
        b.add("bmi", m.bmi, "kg/m2")
        b.add("body_height", m.height, m.height_unit)
        device_time = timestamp(m.timestamp)
        if m.user_id is not None:
            flags["user_id"] = m.user_id
    elif isinstance(m, GlucoseMeasurement):
        if m.is_control_solution:
            return []
        if m.mol_per_l:
            b.add("glucose", _scaled(m.concentration, 3), "mmol/L")
        else:
            b.add("glucose", _scaled(m.concentration, 5), "mg/dL")
        base = timestamp(m.base_time)
        try:
            device_time = None if base is None else base + timedelta(minutes=m.time_offset_min or 0)
        except OverflowError:
            flags["device_time_invalid"] = True
        flags["sequence_number"] = m.sequence_number
        sample_type = enum_name(SampleType, m.sample_type)
        sample_location = enum_name(SampleLocation, m.sample_location)
        if sample_type is not None:
            flags["sample_type"] = sample_type
        if sample_location is not None:
            flags["sample_location"] = sample_location
        for name in flag_names(m.sensor_status) or []:
            flags[name] = True
    elif isinstance(m, CgmMeasurement):
        return _cgm_readings(m, received_at, session_start, group)
    elif isinstance(m, _NOT_MEASUREMENTS):
        return []
    else:
        raise TypeError(f"not a decoded measurement: {type(measurement).__name__}")
    if not b.values:
        return []
    usable = device_time is not None and use_device_time
    return b.build(device_time, flags, group or _group(m, received_at, usable), use_device_time=use_device_time)


def _cgm_readings(
    m: CgmMeasurement, received_at: datetime, session_start: datetime | None, group: str | None
) -> list[Reading]:
    out: list[Reading] = []
    newest = max((r.time_offset_min for r in m.records), default=0)
    for rec in m.records:
        if rec.crc_ok is False:
            continue
        flags: dict[str, FlagValue] = {"time_offset_min": rec.time_offset_min}
        if session_start is not None:
            measured_at = session_start.astimezone(UTC) + timedelta(minutes=rec.time_offset_min)
        else:
            measured_at = received_at - timedelta(minutes=newest - rec.time_offset_min)
            flags["time_estimated"] = True
        for key in ("warning_octet", "cal_temp_octet", "status_octet"):
            value = getattr(rec, key)
            if value:
                flags[f"cgm_{key}"] = value
        if rec.trend is not None and rec.trend.special is None and rec.trend.value is not None:
            flags["trend_mg_dl_min"] = str(rec.trend.value)
        if rec.quality is not None and rec.quality.special is None and rec.quality.value is not None:
            flags["quality_pct"] = str(rec.quality.value)
        b = _Builder(measured_at, timedelta(0))
        b.add("glucose", rec.glucose, "mg/dL")
        if not b.values:
            continue
        out += b.build(None, flags, group or _record_group(rec, session_start, received_at))
    return out


def _record_group(rec: CgmRecord, session_start: datetime | None, received_at: datetime) -> str:
    anchor = session_start.isoformat() if session_start is not None else received_at.isoformat()
    return str(uuid.uuid5(_NAMESPACE, f"CgmRecord|{rec!r}|{anchor}"))
