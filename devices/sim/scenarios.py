"""Clinical scenarios for the physiological simulator.

Contract: a `Scenario` is a frozen value; `Scenario.effects(elapsed_s)` is a pure function of the simulated seconds
elapsed since the patient's start and returns the `Effects` (offsets and flags) that `devices.sim.physiology` adds
on top of the patient's baseline. Nothing here reads a clock or a global random generator.

Time scale: the deterioration begins `onset_s` simulated seconds after the start and reaches its full effect after
`ramp_s / speed` more seconds. `speed` compresses only the deterioration (a 20-minute hypoxia episode becomes 10 s with
`speed=120`), so a test can keep device cadences realistic while the patient gets worse in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final

from devices.errors import SimulationError


@dataclass(frozen=True, slots=True)
class Effects:
    """Offsets a scenario adds to a patient's baseline at one instant (0 / False = no effect)."""

    spo2: float = 0.0
    """Added to SpO2 (%, negative for desaturation)."""
    heart_rate: float = 0.0
    """Added to heart rate (/min), on top of the fever and hypoxia responses computed by the physiology."""
    respiratory_rate: float = 0.0
    systolic: float = 0.0
    diastolic: float = 0.0
    body_temperature: float = 0.0
    """Added to core temperature (Cel); the physiology derives the fever tachycardia from it."""
    glucose: float = 0.0
    """Added to plasma glucose (mg/dL)."""
    perfusion_factor: float = 1.0
    """Multiplies the pulse oximeter's perfusion index (sepsis: poor peripheral perfusion)."""
    rr_irregularity: float = 0.0
    """Coefficient of variation of RR intervals added to the sinus one (atrial fibrillation ~0.2)."""
    irregular_rhythm: bool = False
    cuff_too_loose: bool = False
    oximeter_sensor_off: bool = False
    """The finger is out of the probe: no SpO2/pulse, PLX status 'sensor unconnected to user'."""
    inadequate_signal: bool = False
    """The probe is on but the signal is poor: values flagged questionable."""
    hr_strap_contact: bool = True


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


def _none(_p: float, _s: float) -> Effects:
    return Effects()


def _hypoxia(p: float, _s: float) -> Effects:
    # COPD exacerbation: SpO2 falls by up to 14 points over the ramp (93 % baseline -> ~79-84 %), tachypnoea, low fever.
    return Effects(spo2=-14.0 * p, respiratory_rate=9.0 * p, heart_rate=6.0 * p, body_temperature=0.6 * p)


def _hypertensive_crisis(p: float, _s: float) -> Effects:
    return Effects(systolic=78.0 * p, diastolic=42.0 * p, heart_rate=8.0 * p, respiratory_rate=3.0 * p)


def _sepsis(p: float, _s: float) -> Effects:
    # Fever first, hypotension later in the ramp (distributive shock), tachypnoea, stress hyperglycaemia.
    late = _smoothstep((p - 0.3) / 0.7)
    return Effects(
        body_temperature=2.7 * p,
        heart_rate=22.0 * p,
        systolic=-42.0 * late,
        diastolic=-26.0 * late,
        respiratory_rate=10.0 * p,
        spo2=-4.0 * p,
        glucose=45.0 * p,
        perfusion_factor=1.0 - 0.7 * late,
    )


def _afib(p: float, _s: float) -> Effects:
    on = p > 0.0
    return Effects(heart_rate=30.0 * p, rr_irregularity=0.22 if on else 0.0, irregular_rhythm=on, perfusion_factor=0.8)


def _device_misuse(_p: float, since_onset_s: float) -> Effects:
    # The cuff stays loose; the finger slips out of the oximeter 40 s of every 2 minutes and the signal is poor for
    # 20 s around it; the chest strap loses contact for 10 s of every minute.
    phase = since_onset_s % 120.0
    return Effects(
        cuff_too_loose=True,
        oximeter_sensor_off=phase < 40.0,
        inadequate_signal=40.0 <= phase < 60.0,
        hr_strap_contact=(since_onset_s % 60.0) >= 10.0,
    )


_EFFECTS: Final[Mapping[str, Callable[[float, float], Effects]]] = MappingProxyType(
    {
        "stable": _none,
        "hypoxia": _hypoxia,
        "hypertensive_crisis": _hypertensive_crisis,
        "sepsis": _sepsis,
        "afib": _afib,
        "device_misuse": _device_misuse,
    }
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named deterioration with its timing."""

    name: str
    """One of `SCENARIOS` keys."""
    onset_s: float = 60.0
    """Simulated seconds after the patient's start at which the deterioration begins."""
    ramp_s: float = 900.0
    """Natural (speed 1) duration in seconds from onset to the full effect."""
    speed: float = 1.0
    """How many times faster than in real life the deterioration unfolds (120: 15 min in 7.5 s)."""
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.name not in _EFFECTS:
            raise SimulationError(f"unknown scenario {self.name!r}; known: {', '.join(sorted(_EFFECTS))}")
        if self.speed <= 0 or self.ramp_s <= 0 or not math.isfinite(self.onset_s):
            raise SimulationError(f"scenario {self.name!r}: speed and ramp_s must be > 0, onset_s finite")

    @property
    def full_effect_s(self) -> float:
        """Simulated seconds since the start at which the effect is complete."""
        return self.onset_s + self.ramp_s / self.speed

    def progress(self, elapsed_s: float) -> float:
        """Progress of the deterioration in [0, 1] (smooth S-curve) at `elapsed_s` simulated seconds."""
        if elapsed_s < self.onset_s:
            return 0.0
        return _smoothstep((elapsed_s - self.onset_s) * self.speed / self.ramp_s)

    def effects(self, elapsed_s: float) -> Effects:
        """Offsets and flags at `elapsed_s` simulated seconds since the patient's start."""
        if elapsed_s < self.onset_s:
            return Effects()
        return _EFFECTS[self.name](self.progress(elapsed_s), (elapsed_s - self.onset_s) * self.speed)

    def with_timing(self, *, onset_s: float | None = None, speed: float | None = None) -> Scenario:
        """Copy with another onset and/or speed."""
        return replace(
            self,
            onset_s=self.onset_s if onset_s is None else onset_s,
            speed=self.speed if speed is None else speed,
        )


SCENARIOS: Final[Mapping[str, Scenario]] = MappingProxyType(
    {
        "stable": Scenario("stable", onset_s=0.0, ramp_s=1.0, description="baseline with circadian drift and noise"),
        "hypoxia": Scenario(
            "hypoxia", ramp_s=1200.0, description="COPD exacerbation: SpO2 below 88 % within ~20 min, RR and HR rise"
        ),
        "hypertensive_crisis": Scenario(
            "hypertensive_crisis", ramp_s=1800.0, description="systolic above 180 mmHg, diastolic above 110 mmHg"
        ),
        "sepsis": Scenario(
            "sepsis", ramp_s=3600.0, description="fever >= 38.5 Cel, tachycardia, then falling blood pressure"
        ),
        "afib": Scenario("afib", ramp_s=120.0, description="atrial fibrillation: irregularly irregular RR"),
        "device_misuse": Scenario(
            "device_misuse", ramp_s=1.0, description="cuff too loose, oximeter probe off / poor signal, strap contact"
        ),
    }
)


def get_scenario(name: str, *, onset_s: float | None = None, speed: float | None = None) -> Scenario:
    """The named scenario from `SCENARIOS`, optionally with another onset and speed."""
    try:
        base = SCENARIOS[name]
    except KeyError:
        raise SimulationError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}") from None
    return base.with_timing(onset_s=onset_s, speed=speed)
