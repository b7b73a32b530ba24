"""Simulated pulse oximeter (PLXS, service 0x1822).

- PLX Continuous Measurement 0x2A5F: notified every second while subscribed (SpO2, pulse rate, measurement status,
  device and sensor status, pulse amplitude index).
- PLX Spot-check Measurement 0x2A5E: indicated once per spot check (stored while no client listens, like the other spot
  devices), with timestamp.
- PLX Features 0x2A60: readable; declares the status bits the device uses.
Probe problems follow the patient's scenario: finger out of the probe -> SpO2 and PR are NaN, "measurement unavailable"
and "sensor unconnected to user"; poor signal -> "questionable measurement", "inadequate signal", "poor signal"; poor
perfusion (index < 1 %) -> "low perfusion".
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from devices.gatt import uuids
from devices.gatt.plx import (
    PlxContinuousMeasurement,
    PlxDeviceSensorStatus,
    PlxFeatures,
    PlxMeasurementStatus,
    PlxSpotCheckMeasurement,
    encode_plx_continuous,
    encode_plx_features,
    encode_plx_spot_check,
)
from devices.ieee11073 import Number, Special
from devices.sim.base import CharacteristicSpec, Schedule, ServiceSpec, uuid
from devices.sim.spot import SpotDevice

MS = PlxMeasurementStatus
DSS = PlxDeviceSensorStatus
_NAN = Number.of_special(Special.NAN)

_MS_SUPPORTED = (
    MS.MEASUREMENT_ONGOING | MS.VALIDATED_DATA | MS.MEASUREMENT_UNAVAILABLE | MS.QUESTIONABLE_MEASUREMENT_DETECTED
)
_DSS_SUPPORTED = (
    DSS.INADEQUATE_SIGNAL_DETECTED
    | DSS.POOR_SIGNAL_DETECTED
    | DSS.LOW_PERFUSION_DETECTED
    | DSS.SENSOR_UNCONNECTED_TO_USER
)


class PulseOximeter(SpotDevice):
    """Fingertip oximeter with continuous 1 Hz notifications and spot-check indications."""

    kind = "pulse_oximeter"
    primary_service = uuids.PULSE_OXIMETER_SERVICE
    measurement_uuid = uuid(uuids.PLX_SPOT_CHECK_MEASUREMENT)
    FEATURES = PlxFeatures(
        timestamp_spot_check=True,
        pulse_amplitude_index=True,
        measurement_status_support=_MS_SUPPORTED,
        device_sensor_status_support=_DSS_SUPPORTED,
    )

    def __init__(self, *, continuous_interval: timedelta = timedelta(seconds=1), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.continuous = Schedule(self.patient.profile.start, continuous_interval, max_catch_up=5)

    def device_services(self) -> tuple[ServiceSpec, ...]:
        """PLXS: spot-check (indicate), continuous (notify), features (read)."""
        return (
            ServiceSpec(
                uuid(uuids.PULSE_OXIMETER_SERVICE),
                (
                    CharacteristicSpec(uuid(uuids.PLX_SPOT_CHECK_MEASUREMENT), ("indicate",)),
                    CharacteristicSpec(uuid(uuids.PLX_CONTINUOUS_MEASUREMENT), ("notify",)),
                    CharacteristicSpec(uuid(uuids.PLX_FEATURES), ("read",)),
                ),
            ),
        )

    def read_device(self, char_uuid: str, now: datetime) -> bytes:
        """PLX Features."""
        if char_uuid == uuid(uuids.PLX_FEATURES):
            return encode_plx_features(self.FEATURES)
        return super().read_device(char_uuid, now)

    def _reading(
        self, now: datetime, ok_status: PlxMeasurementStatus
    ) -> tuple[Number, Number, PlxMeasurementStatus, PlxDeviceSensorStatus, Number | None]:
        """(SpO2, PR, measurement status, device and sensor status, PAI) at `now`."""
        v = self.patient.vitals(now)
        if v.oximeter_sensor_off:
            return _NAN, _NAN, MS.MEASUREMENT_UNAVAILABLE, DSS.SENSOR_UNCONNECTED_TO_USER, None
        ms, dss = ok_status, DSS(0)
        if v.inadequate_signal:
            ms = MS.QUESTIONABLE_MEASUREMENT_DETECTED
            dss |= DSS.INADEQUATE_SIGNAL_DETECTED | DSS.POOR_SIGNAL_DETECTED
        if v.perfusion_index < 1.0:
            dss |= DSS.LOW_PERFUSION_DETECTED
        spo2 = Number.from_value(min(100, round(v.spo2)), exponent=0)
        pr = Number.from_value(round(v.pulse_rate), exponent=0)
        pai = Number.from_value(round(v.perfusion_index, 1), exponent=-1)
        return spo2, pr, ms, dss, pai

    def continuous_measurement(self, now: datetime) -> PlxContinuousMeasurement:
        """The 0x2A5F value at `now`."""
        spo2, pr, ms, dss, pai = self._reading(now, MS.MEASUREMENT_ONGOING)
        return PlxContinuousMeasurement(
            spo2=spo2, pulse_rate=pr, measurement_status=ms, device_sensor_status=dss, pulse_amplitude_index=pai
        )

    def spot_check(self, now: datetime) -> PlxSpotCheckMeasurement:
        """The 0x2A5E value for a spot check completed at `now`."""
        spo2, pr, ms, dss, pai = self._reading(now, MS.VALIDATED_DATA)
        return PlxSpotCheckMeasurement(
            spo2=spo2,
            pulse_rate=pr,
            timestamp=self.date_time(now),
            measurement_status=ms,
            device_sensor_status=dss,
            pulse_amplitude_index=pai,
        )

    def measure(self, now: datetime) -> bytes:
        """Encoded 0x2A5E."""
        return encode_plx_spot_check(self.spot_check(now))

    def _streaming(self) -> bool:
        return self.connected and self.is_subscribed(uuid(uuids.PLX_CONTINUOUS_MEASUREMENT))

    def get_timer(self) -> datetime | None:
        """Next continuous notification or next spot check."""
        spot = self.schedule.next_at
        return min(spot, self.continuous.next_at) if self._streaming() else spot

    def handle_timer(self, now: datetime) -> None:
        """Continuous notifications for the elapsed seconds, then spot checks."""
        if self._streaming():
            char = uuid(uuids.PLX_CONTINUOUS_MEASUREMENT)
            for at in self.continuous.due(now):
                self.emit(char, encode_plx_continuous(self.continuous_measurement(at)))
        else:
            self.continuous.skip_to(now)
        super().handle_timer(now)

    def on_subscribe(self, char_uuid: str, now: datetime) -> None:
        """Continuous stream starts one period after subscription; spot checks stored are delivered."""
        if char_uuid == uuid(uuids.PLX_CONTINUOUS_MEASUREMENT):
            self.continuous.skip_to(now)
        super().on_subscribe(char_uuid, now)
