"""The simulated radio environment: patients, their peripherals, a clock, and fault-injection entry points.

A `SimWorld` is plain state (no tasks). The bleak backend (`devices.sim.backend`) finds it either through the explicit
`sim_world=` keyword passed to `BleakScanner`/`BleakClient` (forwarded by bleak to the backend) or through the current
world set with `use_world(world)` / `set_current_world(world)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from devices.errors import SimulationError
from devices.sim.base import Patient, SimPeripheral
from devices.sim.clock import SimClock
from devices.sim.glucose import CgmSensor, GlucoseMeter
from devices.sim.oximeter import PulseOximeter
from devices.sim.peripherals import BloodPressureCuff, HeartRateStrap, Thermometer, WeightScale
from devices.sim.physiology import DEFAULT_START, PatientProfile
from devices.sim.scenarios import Scenario, get_scenario

DEVICE_CLASSES: Final[dict[str, type[SimPeripheral]]] = {
    cls.kind: cls
    for cls in (HeartRateStrap, BloodPressureCuff, Thermometer, PulseOximeter, WeightScale, GlucoseMeter, CgmSensor)
}
"""Device kinds of a patient's kit -> class."""
ALL_KINDS: Final = tuple(DEVICE_CLASSES)
_KIND_BYTE: Final = {kind: i + 1 for i, kind in enumerate(ALL_KINDS)}
_NAMES: Final = {
    "heart_rate": ("Polar-like H10", "HRM"),
    "blood_pressure": ("UA-651BLE-like", "BPM"),
    "thermometer": ("TH-like ear", "THERMO"),
    "pulse_oximeter": ("PO-like 3", "OXI"),
    "weight_scale": ("UC-352-like", "SCALE"),
    "glucose_meter": ("Contour-like", "GLU"),
    "cgm": ("CGM-like", "CGM"),
}


@dataclass(slots=True)
class SimPatient:
    """A patient of the world and the devices measuring them (kind -> peripheral)."""

    patient: Patient
    devices: dict[str, SimPeripheral] = field(default_factory=dict)

    @property
    def profile(self) -> PatientProfile:
        """The patient's baseline."""
        return self.patient.profile


class Link(Protocol):
    """What the world needs of a connected client (the bleak backend's ``SimBleakClient``): a way to wake it.

    A protocol, so that this module does not import the backend (the backend imports the world, not the reverse).
    """

    def wake(self) -> None:
        """Run the peripheral's connection driver now."""


class SimWorld:
    """Peripherals in radio range of the gateway, with their patients and a shared simulated clock."""

    def __init__(
        self,
        *,
        speed: float = 1.0,
        start: datetime = DEFAULT_START,
        clock: SimClock | None = None,
        mtu: int = 247,
        advertising_interval_s: float = 0.1,
        connect_delay_s: float = 0.01,
        connect_timeout_s: float = 1.0,
    ) -> None:
        self.clock = clock or SimClock(start, speed)
        self.mtu = mtu
        """ATT MTU every simulated connection negotiates."""
        self.advertising_interval_s = advertising_interval_s
        """Real seconds between advertisements of each peripheral."""
        self.connect_delay_s = connect_delay_s
        """Real seconds a successful connection takes."""
        self.connect_timeout_s = connect_timeout_s
        """Real seconds before a connection attempt to an out-of-range device times out (capped by bleak's timeout)."""
        self.patients: list[SimPatient] = []
        self.peripherals: dict[str, SimPeripheral] = {}
        self._links: dict[str, Link] = {}

    # --- building ---------------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        patients: int = 1,
        scenario: str | Scenario | Iterable[str | Scenario] = "stable",
        *,
        seed: int = 0,
        kinds: Iterable[str] = ALL_KINDS,
        onset_s: float | None = None,
        scenario_speed: float | None = None,
        device_options: dict[str, dict[str, Any]] | None = None,
        **world_options: Any,
    ) -> SimWorld:
        """A world with `patients` generated patients, each with the devices `kinds`, under `scenario`.

        `scenario` is one name/Scenario for all patients or one per patient; `onset_s`/`scenario_speed` override the
        timing of named scenarios; `device_options` maps a kind to constructor keywords (e.g. {"cgm": {"interval":
        timedelta(minutes=1)}}); `world_options` go to `SimWorld(...)` (speed, start, mtu, ...).
        """
        world = cls(**world_options)
        if isinstance(scenario, str | Scenario):
            scenarios: list[str | Scenario] = [scenario] * patients
        else:
            scenarios = list(scenario)
            if len(scenarios) != patients:
                raise SimulationError(f"{len(scenarios)} scenarios for {patients} patients")
        kinds = tuple(kinds)
        for index, sc in enumerate(scenarios):
            profile = PatientProfile.generate(seed, index, start=world.clock.start)
            if isinstance(sc, str):
                sc = get_scenario(sc, onset_s=onset_s, speed=scenario_speed)
            world.add_patient(profile, sc, kinds=kinds, device_options=device_options)
        return world

    def add_patient(
        self,
        profile: PatientProfile,
        scenario: Scenario,
        *,
        kinds: Iterable[str] = ALL_KINDS,
        device_options: dict[str, dict[str, Any]] | None = None,
    ) -> SimPatient:
        """Add a patient and a kit of devices with deterministic addresses and clock offsets."""
        index = len(self.patients)
        sim = SimPatient(Patient(profile, scenario))
        self.patients.append(sim)
        for kind in kinds:
            try:
                device_cls = DEVICE_CLASSES[kind]
            except KeyError:
                raise SimulationError(f"unknown device kind {kind!r}; known: {', '.join(ALL_KINDS)}") from None
            model, short = _NAMES[kind]
            kb, hi, lo = _KIND_BYTE[kind], index >> 8 & 0xFF, index & 0xFF
            address = f"C0:DE:{kb:02X}:{hi:02X}:{lo:02X}:{profile.seed % 251:02X}"
            # Device clocks keep local time and drift: up to +/- 4 minutes, deterministic per device.
            drift_s = ((profile.seed * 7919 + _KIND_BYTE[kind] * 104729) % 481) - 240
            options: dict[str, Any] = {
                "address": address,
                "name": f"{short}-{index:03d}",
                "patient": sim.patient,
                "model": model,
                "clock_offset": timedelta(minutes=profile.utc_offset_min, seconds=drift_s),
                "rssi": -55 - (index * 3 + _KIND_BYTE[kind]) % 30,
            }
            options.update((device_options or {}).get(kind, {}))
            sim.devices[kind] = self.add(device_cls(**options))
        return sim

    def add(self, peripheral: SimPeripheral) -> SimPeripheral:
        """Put a peripheral in range."""
        if peripheral.address in self.peripherals:
            raise SimulationError(f"duplicate address {peripheral.address}")
        self.peripherals[peripheral.address] = peripheral
        return peripheral

    def get(self, address: str) -> SimPeripheral:
        """The peripheral at `address` (any case)."""
        try:
            return self.peripherals[address.upper()]
        except KeyError:
            raise SimulationError(f"no simulated device at {address}") from None

    def find(self, predicate: Callable[[SimPeripheral], bool]) -> list[SimPeripheral]:
        """Peripherals matching `predicate`."""
        return [p for p in self.peripherals.values() if predicate(p)]

    def devices_of_kind(self, kind: str) -> list[SimPeripheral]:
        """All peripherals of one kind, in patient order."""
        return self.find(lambda p: p.kind == kind)

    def set_scenario(self, patient_index: int, scenario: Scenario) -> None:
        """Switch a patient to another scenario (all their devices follow)."""
        sim = self.patients[patient_index]
        sim.patient = replace(sim.patient, scenario=scenario)
        for device in sim.devices.values():
            device.patient = sim.patient

    # --- fault injection --------------------------------------------------------------------------------------------
    def disconnect(self, address: str, reason: str = "connection terminated by peripheral") -> None:
        """Drop the link to `address` now (the client's disconnected callback fires)."""
        self.get(address).drop_link(reason, self.clock.now())
        self.wake(address)

    def set_in_range(self, address: str, in_range: bool) -> None:
        """Out of range: stops advertising; a connected link is lost (supervision timeout)."""
        peripheral = self.get(address)
        peripheral.advertising = in_range
        if not in_range:
            peripheral.drop_link("connection supervision timeout (out of range)", self.clock.now())
            self.wake(address)

    def fail_next_connects(self, address: str, count: int, error: str = "le-connection-abort-by-local") -> None:
        """The next `count` connection attempts raise a BlueZ-like BleakDBusError carrying `error`."""
        faults = self.get(address).faults
        faults.connect_failures = count
        faults.connect_error = error

    def corrupt_next_notifications(self, address: str, count: int = 1, keep: int = 1) -> None:
        """Truncate the next `count` notifications/indications of `address` to `keep` bytes."""
        faults = self.get(address).faults
        faults.corrupt_next = count
        faults.corrupt_keep = keep

    def disconnect_during_racp(self, address: str, after_records: int) -> None:
        """During the next RACP transfer of the glucose meter at `address`, drop the link after `after_records`."""
        self.get(address).faults.disconnect_after_racp_records = after_records

    # --- links (used by the backend) --------------------------------------------------------------------------------
    def attach(self, address: str, client: Link) -> None:
        """Record the client connected to `address`."""
        self._links[address.upper()] = client

    def detach(self, address: str) -> None:
        """Forget the client of `address`."""
        self._links.pop(address.upper(), None)

    def wake(self, address: str) -> None:
        """Ask the connection driver of `address` (if any) to run the peripheral now."""
        client = self._links.get(address.upper())
        if client is not None:
            client.wake()


def world_from_spec(spec: str) -> SimWorld:
    """A world from a one-line spec, e.g. ``"patients=3,scenario=hypoxia,seed=7,speed=60,onset=120,scenario_speed=10"``.

    Keys: patients (int), scenario (name, or names joined by ``+``, one per patient), seed (int), speed (world time
    factor), onset (scenario onset, simulated seconds), scenario_speed, kinds (device kinds joined by ``+``). Meant for
    command lines and environment variables (e.g. a gateway's ``--simulate`` option).
    """
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not value:
            raise SimulationError(f"bad simulation spec item {part!r}: expected key=value")
        fields[key.strip()] = value.strip()
    unknown = set(fields) - {"patients", "scenario", "seed", "speed", "onset", "scenario_speed", "kinds"}
    if unknown:
        raise SimulationError(f"unknown simulation spec keys: {', '.join(sorted(unknown))}")
    try:
        patients = int(fields.get("patients", "1"))
        names = fields.get("scenario", "stable").split("+")
        return SimWorld.create(
            patients,
            names[0] if len(names) == 1 else names,
            seed=int(fields.get("seed", "0")),
            speed=float(fields.get("speed", "1")),
            onset_s=float(fields["onset"]) if "onset" in fields else None,
            scenario_speed=float(fields["scenario_speed"]) if "scenario_speed" in fields else None,
            kinds=fields["kinds"].split("+") if "kinds" in fields else ALL_KINDS,
        )
    except ValueError as exc:
        raise SimulationError(f"bad simulation spec {spec!r}: {exc}") from exc


_current: list[SimWorld] = []


def set_current_world(world: SimWorld | None) -> None:
    """Set (or clear with None) the process-wide world used by backends created without `sim_world=`."""
    _current.clear()
    if world is not None:
        _current.append(world)


def current_world() -> SimWorld:
    """The world set by `use_world`/`set_current_world`; SimulationError if none."""
    if not _current:
        raise SimulationError("no simulated world: use devices.sim.use_world(world) or pass sim_world=world")
    return _current[-1]


@contextlib.contextmanager
def use_world(world: SimWorld) -> Iterator[SimWorld]:
    """Make `world` the current world inside the block (restores the previous one after)."""
    _current.append(world)
    try:
        yield world
    finally:
        _current.remove(world)
