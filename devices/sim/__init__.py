"""Simulated patients, Bluetooth LE health devices, and a bleak backend over them (see docs/devices-sim.md).

Pure parts (no bleak import): `physiology`, `scenarios`, the peripherals, `SimWorld`. The bleak backend lives in
`devices.sim.backend` (`SimBleakScanner`, `SimBleakClient`) and needs the `gateway` extra (bleak).
"""

from __future__ import annotations

from devices.sim.base import Faults, LinkLost, Notification, Patient, SimPeripheral
from devices.sim.clock import SimClock
from devices.sim.glucose import CgmSensor, GlucoseMeter
from devices.sim.oximeter import PulseOximeter
from devices.sim.peripherals import BloodPressureCuff, HeartRateStrap, Thermometer, WeightScale
from devices.sim.physiology import PatientProfile, Vitals, cgm_glucose_at, glucose_at, rr_intervals, vitals_at
from devices.sim.scenarios import SCENARIOS, Effects, Scenario, get_scenario
from devices.sim.world import (
    ALL_KINDS,
    DEVICE_CLASSES,
    SimPatient,
    SimWorld,
    current_world,
    set_current_world,
    use_world,
    world_from_spec,
)

__all__ = [
    "ALL_KINDS",
    "DEVICE_CLASSES",
    "SCENARIOS",
    "BloodPressureCuff",
    "CgmSensor",
    "Effects",
    "Faults",
    "GlucoseMeter",
    "HeartRateStrap",
    "LinkLost",
    "Notification",
    "Patient",
    "PatientProfile",
    "PulseOximeter",
    "Scenario",
    "SimClock",
    "SimPatient",
    "SimPeripheral",
    "SimWorld",
    "Thermometer",
    "Vitals",
    "WeightScale",
    "cgm_glucose_at",
    "current_world",
    "get_scenario",
    "glucose_at",
    "rr_intervals",
    "set_current_world",
    "use_world",
    "vitals_at",
    "world_from_spec",
]
