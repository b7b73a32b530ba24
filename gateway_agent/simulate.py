"""Simulated devices for ``tbib gateway run --simulate N`` and tests: a :class:`devices.sim.SimWorld` whose peripherals
are enrolled, and the bleak backend keywords that make :class:`~gateway_agent.ble.BleManager` talk to it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from devices.sim import ALL_KINDS, SimWorld, get_scenario
from devices.sim.backend import SimBleakClient, SimBleakScanner
from gateway_agent.config import DeviceEntry, DeviceKind

#: ``--sim-cadence demo``: spot devices measure about every minute instead of every 30 min to 24 h (``tbib demo``).
DEMO_CADENCE: Final[dict[str, dict[str, Any]]] = {
    "blood_pressure": {"interval": timedelta(seconds=60), "first_measurement": timedelta(seconds=8)},
    "thermometer": {"interval": timedelta(seconds=45), "first_measurement": timedelta(seconds=5)},
    "weight_scale": {"interval": timedelta(minutes=5), "first_measurement": timedelta(seconds=12)},
    "glucose_meter": {"interval": timedelta(minutes=2)},
    "cgm": {"interval": timedelta(minutes=1)},
}
CADENCES: Final[dict[str, dict[str, dict[str, Any]] | None]] = {"device": None, "demo": DEMO_CADENCE}


def scenario_speed(name: str, full_effect_s: float) -> float:
    """The speed at which scenario ``name`` reaches its full effect ``full_effect_s`` real seconds after its onset."""
    if full_effect_s <= 0:
        raise ValueError("the time to the full effect must be > 0 s")
    return max(1.0, get_scenario(name).ramp_s / full_effect_s)


@dataclass(frozen=True, slots=True)
class Simulation:
    """A simulated world, its enrolled devices, and what to pass to the BLE manager."""

    world: SimWorld
    devices: tuple[DeviceEntry, ...]
    scanner_kwargs: dict[str, Any] = field(default_factory=dict)
    client_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def clock(self) -> Callable[[], datetime]:
        """The gateway clock to use with this world (its simulated time: identical to UTC at speed 1)."""
        return self.world.clock.now


def simulate(
    patients: int = 1,
    scenario: str = "stable",
    *,
    kinds: Iterable[str] = ALL_KINDS,
    speed: float = 1.0,
    seed: int = 0,
    start: datetime | None = None,
    device_options: dict[str, dict[str, Any]] | None = None,
    idle_disconnect_s: float | None = None,
    onset_s: float | None = None,
    full_effect_s: float | None = None,
) -> Simulation:
    """``patients`` simulated patients, each with one device of every kind in ``kinds``, all enrolled.

    ``onset_s``/``full_effect_s``: the deterioration starts ``onset_s`` seconds after the start and reaches its full
    effect ``full_effect_s`` seconds later (device clocks keep real time; only the scenario is compressed).
    """
    world = SimWorld.create(
        patients,
        scenario,
        seed=seed,
        kinds=tuple(kinds),
        speed=speed,
        start=start or datetime.now(UTC),
        device_options=device_options,
        onset_s=onset_s,
        scenario_speed=scenario_speed(scenario, full_effect_s) if full_effect_s is not None else None,
    )
    entries: list[DeviceEntry] = []
    for index, patient in enumerate(world.patients):
        for kind, peripheral in patient.devices.items():
            entries.append(
                DeviceEntry(
                    address=peripheral.address,
                    device_id=f"sim-{index}-{kind}",
                    kind=DeviceKind(kind),
                    model=peripheral.model,
                    serial=peripheral.serial,
                    idle_disconnect_s=idle_disconnect_s,
                )
            )
    kw: dict[str, Any] = {"sim_world": world}
    return Simulation(world, tuple(entries), {"backend": SimBleakScanner, **kw}, {"backend": SimBleakClient, **kw})


def parse_kinds(text: str | None) -> Sequence[str]:
    """``"heart_rate,blood_pressure"`` -> kinds (all when empty); ``ValueError`` naming an unknown one."""
    if not text:
        return ALL_KINDS
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown:
        raise ValueError(f"unknown device kind(s) {', '.join(unknown)}; known: {', '.join(ALL_KINDS)}")
    return kinds
