"""`tbib gateway run --simulate-scenario` options used by `tbib demo`: seed, onset, time to full effect, cadence."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from devices.sim import get_scenario
from gateway_agent.simulate import DEMO_CADENCE, scenario_speed, simulate


def test_onset_and_full_effect_compress_only_the_scenario() -> None:
    sim = simulate(1, "hypoxia", seed=3, onset_s=2, full_effect_s=20, device_options=DEMO_CADENCE)
    scenario = sim.world.patients[0].patient.scenario
    assert scenario.onset_s == 2
    assert scenario.full_effect_s == pytest.approx(22.0)
    assert sim.world.clock.speed == 1.0  # device clocks keep real time
    bp = sim.world.patients[0].devices["blood_pressure"]
    assert bp.schedule.period == timedelta(seconds=60)  # type: ignore[attr-defined]
    assert bp.schedule.first == bp.patient.profile.start + timedelta(seconds=8)  # type: ignore[attr-defined]


def test_seed_selects_the_patient_and_the_device_addresses() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    a, b, c = (simulate(1, "stable", seed=s, start=start) for s in (100, 100, 101))
    assert [d.address for d in a.devices] == [d.address for d in b.devices]
    assert a.world.patients[0].profile == b.world.patients[0].profile
    assert a.world.patients[0].profile != c.world.patients[0].profile


def test_scenario_speed_never_slows_a_scenario_down() -> None:
    ramp = get_scenario("sepsis").ramp_s
    assert scenario_speed("sepsis", ramp / 4) == pytest.approx(4.0)
    assert scenario_speed("sepsis", ramp * 10) == 1.0
    with pytest.raises(ValueError, match="> 0"):
        scenario_speed("sepsis", 0)


def test_cli_refuses_an_unknown_scenario_with_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway_agent.cli", "gateway", "run", "--simulate-scenario", "nope", "--seconds", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "unknown scenario 'nope'" in proc.stderr
