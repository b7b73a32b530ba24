"""One simulated home gateway for the demo (run as ``python -m teleconsult.demo.simgateway``, one process each).

Like ``tbib gateway run --simulate-scenario NAME`` but with the demo's time compression: the scenario starts after
``--onset`` seconds and unfolds ``--scenario-speed`` times faster (device clocks stay real time, so readings carry
true timestamps), spot devices measure every minute or so instead of every 30 minutes, and each patient has its own
physiology seed. The gateway CLI has no options for these yet; this module is a separate process started by the demo,
so the server package still never imports ``gateway_agent``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

#: Spot devices measure this often in the demo (their real default is every 30 min to 24 h).
DEMO_DEVICE_OPTIONS: Final[dict[str, dict[str, Any]]] = {
    "blood_pressure": {"interval": timedelta(seconds=60), "first_measurement": timedelta(seconds=8)},
    "thermometer": {"interval": timedelta(seconds=45), "first_measurement": timedelta(seconds=5)},
    "weight_scale": {"interval": timedelta(minutes=5), "first_measurement": timedelta(seconds=12)},
    "glucose_meter": {"interval": timedelta(minutes=2)},
    "cgm": {"interval": timedelta(minutes=1)},
}


def scenario_speed(name: str, full_effect_s: float) -> float:
    """The speed at which ``name`` reaches its full effect ``full_effect_s`` real seconds after its onset."""
    from devices.sim import get_scenario

    return max(1.0, get_scenario(name).ramp_s / full_effect_s)


async def _run(args: argparse.Namespace) -> int:
    from devices.sim import SimWorld, get_scenario
    from devices.sim.backend import SimBleakClient, SimBleakScanner
    from gateway_agent.agent import Gateway
    from gateway_agent.config import DeviceEntry, DeviceKind, load_config

    scenario = get_scenario(args.scenario, onset_s=args.onset, speed=scenario_speed(args.scenario, args.full_effect_s))
    world = SimWorld.create(1, scenario, seed=args.seed, start=datetime.now(UTC), device_options=DEMO_DEVICE_OPTIONS)
    entries = tuple(
        DeviceEntry(address=p.address, device_id=f"sim-{kind}", kind=DeviceKind(kind), model=p.model, serial=p.serial)
        for kind, p in world.patients[0].devices.items()
    )
    settings = load_config(
        None,
        overrides={
            "broker_url": args.broker,
            "gateway_id": args.gateway_id,
            "outbox": {"path": str(args.outbox)},
            "status_file": str(args.status_file),
        },
    ).model_copy(update={"devices": entries})
    kw = {"sim_world": world}
    gateway = Gateway(
        settings,
        scanner_kwargs={"backend": SimBleakScanner, **kw},
        client_kwargs={"backend": SimBleakClient, **kw},
        clock=world.clock.now,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await gateway.run(stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the subprocess."""
    p = argparse.ArgumentParser(prog="python -m teleconsult.demo.simgateway")
    p.add_argument("--gateway-id", required=True)
    p.add_argument("--scenario", default="stable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--onset", type=float, default=20.0, help="seconds before the deterioration starts")
    p.add_argument("--full-effect-s", type=float, default=90.0, help="seconds from onset to the full effect")
    p.add_argument("--broker", required=True)
    p.add_argument("--outbox", type=Path, required=True)
    p.add_argument("--status-file", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except Exception as exc:  # noqa: BLE001 - a subprocess: one line and an exit code
        sys.stderr.write(f"simgateway {args.gateway_id}: {type(exc).__name__}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
