"""Simulated health peripherals: heart rate strap, blood pressure cuff, thermometer, weight scale.

Each class exposes the real SIG service (UUIDs and properties as the profile specifications require) and produces bytes
with the codecs of `devices.gatt` at a realistic cadence:
- `HeartRateStrap` (HRS 0x180D): Heart Rate Measurement 0x2A37 notified every second (RR intervals, sensor contact,
  energy expended every 10th notification), Body Sensor Location 0x2A38 readable (1 = chest).
- `BloodPressureCuff` (BLS 0x1810): one Blood Pressure Measurement 0x2A35 indication per spot check, optionally
  preceded by Intermediate Cuff Pressure 0x2A36 notifications (1 Hz, inflation then deflation); Feature 0x2A49.
- `Thermometer` (HTS 0x1809): Temperature Measurement 0x2A1C indications; Temperature Type 0x2A1D readable.
- `WeightScale` (WSS 0x181D): Weight Measurement 0x2A9D indications with BMI and height; Weight Scale Feature 0x2A9E.
The pulse oximeter lives in `devices.sim.oximeter`, the glucose meter and CGM in `devices.sim.glucose`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from devices.gatt import uuids
from devices.gatt.blood_pressure import (
    BloodPressureMeasurement,
    BloodPressureStatus,
    IntermediateCuffPressure,
    PulseRateRange,
    encode_blood_pressure_measurement,
    encode_intermediate_cuff_pressure,
)
from devices.gatt.heart_rate import RR_RESOLUTION_HZ, HeartRateMeasurement, encode_heart_rate_measurement
from devices.gatt.temperature import (
    TemperatureMeasurement,
    TemperatureType,
    TemperatureTypeValue,
    encode_temperature_measurement,
    encode_temperature_type,
)
from devices.gatt.weight import (
    WeightMeasurement,
    WeightScaleFeature,
    encode_weight_measurement,
    encode_weight_scale_feature,
)
from devices.ieee11073 import Number
from devices.sim.base import CharacteristicSpec, Schedule, ServiceSpec, SimPeripheral, u16, uuid
from devices.sim.physiology import rr_intervals
from devices.sim.spot import SpotDevice


def _num(value: float, exponent: int = 0) -> Number:
    return Number.from_value(value, exponent=exponent)


class HeartRateStrap(SimPeripheral):
    """Chest strap: notifies 0x2A37 once per (simulated) second while subscribed."""

    kind = "heart_rate"
    primary_service = uuids.HEART_RATE_SERVICE

    def __init__(self, *, interval: timedelta = timedelta(seconds=1), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.interval = interval
        self.schedule = Schedule(self.patient.profile.start, interval, max_catch_up=5)
        self.energy_kj = 0.0
        self._count = 0

    def device_services(self) -> tuple[ServiceSpec, ...]:
        """HRS: measurement (notify), body sensor location (read)."""
        return (
            ServiceSpec(
                uuid(uuids.HEART_RATE_SERVICE),
                (
                    CharacteristicSpec(uuid(uuids.HEART_RATE_MEASUREMENT), ("notify",)),
                    CharacteristicSpec(uuid(uuids.BODY_SENSOR_LOCATION), ("read",)),
                ),
            ),
        )

    def read_device(self, char_uuid: str, now: datetime) -> bytes:
        """Body Sensor Location: 1 = chest (HRS §3.2)."""
        if char_uuid == uuid(uuids.BODY_SENSOR_LOCATION):
            return b"\x01"
        return super().read_device(char_uuid, now)

    def measurement(self, now: datetime) -> HeartRateMeasurement:
        """The 0x2A37 value the strap sends at `now`."""
        v = self.patient.vitals(now)
        seconds = self.interval.total_seconds()
        self.energy_kj += (0.02 + max(0.0, v.heart_rate - 40.0) * 0.001) * seconds  # kJ/s: ~220 kJ/h at 80 /min
        self._count += 1
        contact = v.hr_strap_contact
        rr: tuple[int, ...] = ()
        if contact:
            rr_s = rr_intervals(self.patient.profile, self.patient.scenario, now, seconds)
            rr = tuple(round(x * RR_RESOLUTION_HZ) for x in rr_s)
        return HeartRateMeasurement(
            heart_rate=round(v.heart_rate) if contact else 0,
            sensor_contact=contact,
            energy_expended_kj=min(0xFFFF, int(self.energy_kj)) if self._count % 10 == 0 else None,
            rr_intervals=rr,
        )

    def get_timer(self) -> datetime | None:
        """Next notification (only while a client listens)."""
        if self.connected and self.is_subscribed(uuid(uuids.HEART_RATE_MEASUREMENT)):
            return self.schedule.next_at
        return None

    def handle_timer(self, now: datetime) -> None:
        """Notify the beats of each elapsed second."""
        char = uuid(uuids.HEART_RATE_MEASUREMENT)
        if not (self.connected and self.is_subscribed(char)):
            self.schedule.skip_to(now)
            return
        for at in self.schedule.due(now):
            self.emit(char, encode_heart_rate_measurement(self.measurement(at)))

    def on_subscribe(self, char_uuid: str, now: datetime) -> None:
        """Start the 1 Hz stream one period after subscription."""
        self.schedule.skip_to(now)


class BloodPressureCuff(SpotDevice):
    """Upper-arm cuff: one 0x2A35 indication per spot check, optional 0x2A36 notifications while measuring."""

    kind = "blood_pressure"
    primary_service = uuids.BLOOD_PRESSURE_SERVICE
    measurement_uuid = uuid(uuids.BLOOD_PRESSURE_MEASUREMENT)
    CUFF_CYCLE_S = 20

    def __init__(self, *, intermediate_cuff_pressure: bool = True, user_id: int | None = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.intermediate_cuff_pressure = intermediate_cuff_pressure
        self.user_id = user_id
        self._icp = Schedule(self.patient.profile.start, timedelta(seconds=1), max_catch_up=self.CUFF_CYCLE_S)

    def device_services(self) -> tuple[ServiceSpec, ...]:
        """BLS: measurement (indicate), intermediate cuff pressure (notify), feature (read)."""
        return (
            ServiceSpec(
                uuid(uuids.BLOOD_PRESSURE_SERVICE),
                (
                    CharacteristicSpec(uuid(uuids.BLOOD_PRESSURE_MEASUREMENT), ("indicate",)),
                    CharacteristicSpec(uuid(uuids.INTERMEDIATE_CUFF_PRESSURE), ("notify",)),
                    CharacteristicSpec(uuid(uuids.BLOOD_PRESSURE_FEATURE), ("read",)),
                ),
            ),
        )

    def read_device(self, char_uuid: str, now: datetime) -> bytes:
        """Blood Pressure Feature (BLS §3.3): body movement, cuff fit, irregular pulse, pulse range, position."""
        if char_uuid == uuid(uuids.BLOOD_PRESSURE_FEATURE):
            return u16(0b0000_0000_0001_1111 | (1 << 5 if self.user_id is not None else 0))
        return super().read_device(char_uuid, now)

    def _status(self, now: datetime) -> BloodPressureStatus:
        v = self.patient.vitals(now)
        if v.pulse_rate > 100:
            pulse_range = PulseRateRange.ABOVE_UPPER_LIMIT
        elif v.pulse_rate < 40:
            pulse_range = PulseRateRange.BELOW_LOWER_LIMIT
        else:
            pulse_range = PulseRateRange.IN_RANGE
        return BloodPressureStatus(
            cuff_too_loose=v.cuff_too_loose, irregular_pulse=v.irregular_rhythm, pulse_rate_range=pulse_range
        )

    def measurement(self, now: datetime) -> BloodPressureMeasurement:
        """The 0x2A35 value for a measurement completed at `now` (mmHg, whole units as cuffs display)."""
        v = self.patient.vitals(now)
        return BloodPressureMeasurement(
            systolic=_num(round(v.systolic)),
            diastolic=_num(round(v.diastolic)),
            mean_arterial_pressure=_num(round(v.mean_arterial_pressure)),
            timestamp=self.date_time(now),
            pulse_rate=_num(round(v.pulse_rate)),
            user_id=self.user_id,
            measurement_status=self._status(now),
        )

    def measure(self, now: datetime) -> bytes:
        """Encoded 0x2A35 for a measurement at `now`."""
        return encode_blood_pressure_measurement(self.measurement(now))

    def cuff_pressure(self, now: datetime, completes_at: datetime) -> float:
        """Cuff pressure (mmHg) `now` during the cycle ending at `completes_at`: inflate 5 s, then deflate."""
        v = self.patient.vitals(completes_at)
        left = (completes_at - now).total_seconds()
        elapsed = self.CUFF_CYCLE_S - left
        top = v.systolic + 30.0
        if elapsed < 5:
            return top * max(0.0, elapsed) / 5.0
        return top - (top - (v.diastolic - 15.0)) * (elapsed - 5.0) / (self.CUFF_CYCLE_S - 5.0)

    def _icp_active(self) -> bool:
        return (
            self.intermediate_cuff_pressure
            and self.connected
            and self.is_subscribed(uuid(uuids.INTERMEDIATE_CUFF_PRESSURE))
        )

    def get_timer(self) -> datetime | None:
        """Next measurement, or next cuff-pressure tick during the cycle before it."""
        nxt = self.schedule.next_at
        if self._icp_active() and self._icp.next_at < nxt:
            return max(self._icp.next_at, nxt - timedelta(seconds=self.CUFF_CYCLE_S))
        return nxt

    def handle_timer(self, now: datetime) -> None:
        """Cuff-pressure notifications during the cycle, then the measurement."""
        if self._icp_active():
            completes = self.schedule.next_at
            char = uuid(uuids.INTERMEDIATE_CUFF_PRESSURE)
            for at in self._icp.due(min(now, completes - timedelta(microseconds=1))):
                if (completes - at).total_seconds() <= self.CUFF_CYCLE_S:
                    icp = IntermediateCuffPressure(
                        cuff_pressure=_num(round(self.cuff_pressure(at, completes))),
                        timestamp=self.date_time(at),
                        user_id=self.user_id,
                    )
                    self.emit(char, encode_intermediate_cuff_pressure(icp))
        else:
            self._icp.skip_to(now)
        super().handle_timer(now)


class Thermometer(SpotDevice):
    """Ear thermometer: one 0x2A1C indication per reading; the body site is the static 0x2A1D (HTS §3.2)."""

    kind = "thermometer"
    primary_service = uuids.HEALTH_THERMOMETER_SERVICE
    measurement_uuid = uuid(uuids.TEMPERATURE_MEASUREMENT)

    def __init__(self, *, site: TemperatureType = TemperatureType.EAR, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.site = site

    def device_services(self) -> tuple[ServiceSpec, ...]:
        """HTS: measurement (indicate), temperature type (read)."""
        return (
            ServiceSpec(
                uuid(uuids.HEALTH_THERMOMETER_SERVICE),
                (
                    CharacteristicSpec(uuid(uuids.TEMPERATURE_MEASUREMENT), ("indicate",)),
                    CharacteristicSpec(uuid(uuids.TEMPERATURE_TYPE), ("read",)),
                ),
            ),
        )

    def read_device(self, char_uuid: str, now: datetime) -> bytes:
        """Temperature Type."""
        if char_uuid == uuid(uuids.TEMPERATURE_TYPE):
            return encode_temperature_type(TemperatureTypeValue(int(self.site)))
        return super().read_device(char_uuid, now)

    def measurement(self, now: datetime) -> TemperatureMeasurement:
        """Reading at `now`, 0.1 Cel resolution, device timestamp (the type is in 0x2A1D, so not repeated here)."""
        v = self.patient.vitals(now)
        return TemperatureMeasurement(
            temperature=Number.from_value(round(v.body_temperature, 1), exponent=-1, bits=32),
            timestamp=self.date_time(now),
        )

    def measure(self, now: datetime) -> bytes:
        """Encoded 0x2A1C."""
        return encode_temperature_measurement(self.measurement(now))


class WeightScale(SpotDevice):
    """Bathroom scale: one 0x2A9D indication per weighing, with BMI and height (WSS)."""

    kind = "weight_scale"
    primary_service = uuids.WEIGHT_SCALE_SERVICE
    measurement_uuid = uuid(uuids.WEIGHT_MEASUREMENT)
    FEATURE = WeightScaleFeature(
        timestamp_supported=True,
        multiple_users_supported=True,
        bmi_supported=True,
        weight_resolution=4,  # 0.05 kg
        height_resolution=3,  # 0.001 m
    )

    def __init__(self, *, user_id: int = 1, interval: timedelta = timedelta(hours=24), **kwargs: Any) -> None:
        super().__init__(interval=interval, **kwargs)
        self.user_id = user_id

    def device_services(self) -> tuple[ServiceSpec, ...]:
        """WSS: feature (read), measurement (indicate)."""
        return (
            ServiceSpec(
                uuid(uuids.WEIGHT_SCALE_SERVICE),
                (
                    CharacteristicSpec(uuid(uuids.WEIGHT_SCALE_FEATURE), ("read",)),
                    CharacteristicSpec(uuid(uuids.WEIGHT_MEASUREMENT), ("indicate",)),
                ),
            ),
        )

    def read_device(self, char_uuid: str, now: datetime) -> bytes:
        """Weight Scale Feature."""
        if char_uuid == uuid(uuids.WEIGHT_SCALE_FEATURE):
            return encode_weight_scale_feature(self.FEATURE)
        return super().read_device(char_uuid, now)

    def measurement(self, now: datetime) -> WeightMeasurement:
        """Weighing at `now` at the scale's 0.05 kg resolution."""
        v = self.patient.vitals(now)
        weight = round(v.weight_kg * 20) / 20
        height = round(v.height_m, 3)
        return WeightMeasurement(
            weight=weight,
            timestamp=self.date_time(now),
            user_id=self.user_id,
            bmi=round(weight / (height * height), 1),
            height=height,
        )

    def measure(self, now: datetime) -> bytes:
        """Encoded 0x2A9D."""
        return encode_weight_measurement(self.measurement(now))
