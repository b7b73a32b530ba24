"""`tbib gateway run|scan|status|enroll`: the patient's home gateway.

``enroll`` belongs to the security work (issue 6): it lives in ``gateway_agent/enroll_cli.py``, a module exposing
``add_parser(gateway_subparsers)`` that registers the ``enroll`` subcommand (setting ``func(args) -> int``). Until that
module exists, ``tbib gateway enroll`` says "not implemented yet (issue 6)" and exits 2.

Exit codes: 0 success, 1 runtime failure (status stale, broker refused), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from devices.errors import DevicesError
from gateway_agent.config import DEFAULT_CONFIG_PATH, GatewaySettings, load_config
from gateway_agent.errors import GatewayError

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    """Register `tbib gateway` and its subcommands."""
    parser: argparse.ArgumentParser = sub.add_parser("gateway", help="run, scan, enrol or inspect the home gateway")
    gw = parser.add_subparsers(dest="gateway_command", metavar="SUBCOMMAND", required=True)

    run = gw.add_parser("run", help="capture readings from enrolled BLE devices and publish them to the broker")
    _config_arg(run)
    sim = run.add_mutually_exclusive_group()
    sim.add_argument("--simulate", type=int, metavar="N", help="N simulated patients (a device kit each), enrolled")
    sim.add_argument("--simulate-scenario", metavar="NAME", help="one simulated patient under scenario NAME")
    run.add_argument("--sim-kinds", metavar="K1,K2", help="simulated device kinds (default: all)")
    run.add_argument("--sim-speed", type=float, default=1.0, help="simulated time speed factor (default 1)")
    run.add_argument("--sim-seed", type=int, default=0, help="seed of the simulated patients' physiology (default 0)")
    run.add_argument("--sim-onset", type=float, metavar="S", help="seconds before the scenario's deterioration starts")
    run.add_argument("--sim-full-effect", type=float, metavar="S", help="seconds from the onset to its full effect")
    run.add_argument(
        "--sim-cadence",
        choices=["demo", "device"],
        default="device",
        help="spot-device cadence: device (real: every 30 min to 24 h, default) or demo (about every minute)",
    )
    run.add_argument("--broker", metavar="URL", help="override broker_url (mqtt:// or mqtts://)")
    run.add_argument("--gateway-id", help="override gateway_id")
    run.add_argument("--outbox", type=Path, metavar="PATH", help="override outbox.path")
    run.add_argument("--status-file", type=Path, metavar="PATH", help="override status_file")
    run.add_argument("--seconds", type=float, help="stop after this many seconds (default: run until SIGTERM)")
    run.set_defaults(func=cmd_run)

    scan = gw.add_parser("scan", help="list advertising BLE health devices (enrolled ones marked)")
    _config_arg(scan)
    scan.add_argument("--seconds", type=float, default=5.0, help="scan duration (default 5 s)")
    scan.add_argument("--simulate", type=int, metavar="N", help="scan N simulated patients' devices instead")
    scan.add_argument("--json", action="store_true", help="one JSON object on stdout")
    scan.set_defaults(func=cmd_scan)

    status = gw.add_parser("status", help="link state, outbox depth, per-device last reading and last error")
    _config_arg(status)
    status.add_argument("--status-file", type=Path, metavar="PATH", help="read this status file")
    status.add_argument("--json", action="store_true", help="print the status document as JSON")
    status.add_argument("--max-age", type=float, default=15.0, help="older than this (s) = stale, exit 1")
    status.set_defaults(func=cmd_status)

    try:
        enroll_cli = importlib.import_module("gateway_agent.enroll_cli")
    except ModuleNotFoundError as exc:
        if exc.name != "gateway_agent.enroll_cli":
            raise
        enroll = gw.add_parser("enroll", help="enrol this gateway with the server (not implemented yet)")
        enroll.set_defaults(func=_enroll_stub)
    else:
        enroll_cli.add_parser(gw)


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        type=Path,
        metavar="FILE",
        help=f"TOML config file (default {DEFAULT_CONFIG_PATH} if it exists)",
    )


def _enroll_stub(_args: argparse.Namespace) -> int:
    sys.stderr.write("tbib gateway enroll: not implemented yet (issue 6)\n")
    return 2


def _fail(command: str, message: str, code: int) -> int:
    sys.stderr.write(f"tbib gateway {command}: error: {message}\n")
    return code


def _settings(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> GatewaySettings:
    path = args.config
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    return load_config(path, overrides={k: v for k, v in (overrides or {}).items() if v is not None})


# ----------------------------------------------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    """`tbib gateway run`."""
    from gateway_agent.agent import Gateway

    simulated = args.simulate is not None or args.simulate_scenario is not None
    overrides: dict[str, Any] = {
        "broker_url": args.broker,
        "gateway_id": args.gateway_id,
        "status_file": str(args.status_file) if args.status_file else None,
        "outbox": {"path": str(args.outbox)} if args.outbox else None,
    }
    if simulated and args.gateway_id is None and args.config is None and not os.environ.get("TBIB_GATEWAY_GATEWAY_ID"):
        overrides["gateway_id"] = "gw-sim"  # a simulated run needs no config file
    try:
        settings = _settings(args, overrides)
        kwargs: dict[str, Any] = {}
        if simulated:
            from gateway_agent.simulate import CADENCES, parse_kinds, simulate

            sim = simulate(
                args.simulate or 1,
                args.simulate_scenario or "stable",
                kinds=parse_kinds(args.sim_kinds),
                speed=args.sim_speed,
                seed=args.sim_seed,
                onset_s=args.sim_onset,
                full_effect_s=args.sim_full_effect,
                device_options=CADENCES[args.sim_cadence],
            )
            settings = settings.model_copy(update={"devices": sim.devices})
            kwargs = {"scanner_kwargs": sim.scanner_kwargs, "client_kwargs": sim.client_kwargs, "clock": sim.clock}
            sys.stderr.write(f"tbib gateway run: {len(sim.devices)} simulated devices enrolled\n")
        gateway = Gateway(settings, **kwargs)
    except (GatewayError, DevicesError, ValueError) as exc:
        return _fail("run", str(exc), 2)
    return asyncio.run(_run(gateway, args.seconds))


async def _run(gateway: Any, seconds: float | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if seconds is not None:
        loop.call_later(seconds, stop.set)
    try:
        await gateway.run(stop)
    except GatewayError as exc:
        return _fail("run", str(exc), 1)
    err = gateway.publisher.last_error
    if err is not None:
        sys.stderr.write(f"tbib gateway run: last broker error: {err}\n")
    return 0


# ---------------------------------------------------------------------------------------------------------- scan
def cmd_scan(args: argparse.Namespace) -> int:
    """`tbib gateway scan`."""
    from gateway_agent.ble import scan

    enrolled: dict[str, str] = {}
    scanner_kwargs: dict[str, Any] = {}
    try:
        if args.simulate is not None:
            from gateway_agent.simulate import simulate

            sim = simulate(args.simulate)
            scanner_kwargs = sim.scanner_kwargs
            enrolled = {d.address: d.device_id for d in sim.devices}  # a simulated run enrols them all
        elif args.config is not None or DEFAULT_CONFIG_PATH.exists():
            enrolled = {d.address: d.device_id for d in _settings(args).devices}
    except (GatewayError, ValueError) as exc:
        return _fail("scan", str(exc), 2)
    try:
        found = asyncio.run(scan(None, seconds=args.seconds, scanner_kwargs=scanner_kwargs))
    except Exception as exc:  # noqa: BLE001 (bleak raises many types when there is no adapter)
        return _fail("scan", f"cannot scan (is BlueZ running, is there an adapter?): {type(exc).__name__}: {exc}", 1)
    rows = [
        {
            "address": d.address,
            "name": adv.local_name or d.name,
            "rssi": adv.rssi,
            "services": adv.service_uuids,
            "enrolled_as": enrolled.get(d.address.upper()),
        }
        for d, adv in found
    ]
    if args.json:
        sys.stdout.write(json.dumps({"devices": rows}) + "\n")
        return 0
    for r in rows:
        mark = f"enrolled as {r['enrolled_as']}" if r["enrolled_as"] else "not enrolled"
        sys.stdout.write(f"{r['address']}  {r['rssi'] or '?':>4} dBm  {r['name'] or '-':<20} {mark}\n")
    if not rows:
        sys.stdout.write("no BLE health device heard\n")
    return 0


# -------------------------------------------------------------------------------------------------------- status
def cmd_status(args: argparse.Namespace) -> int:
    """`tbib gateway status`: read the status file written by `tbib gateway run`."""
    path = args.status_file
    if path is None:
        try:
            path = _settings(args).status_file
        except GatewayError as exc:
            return _fail("status", str(exc), 2)
    if path is None:
        return _fail("status", "no status_file configured", 2)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _fail("status", f"{path} does not exist: is the gateway running?", 1)
    except (OSError, ValueError) as exc:
        return _fail("status", f"cannot read {path}: {exc}", 1)
    age = time.time() - Path(path).stat().st_mtime
    stale = age > args.max_age or not doc.get("running", False)
    if args.json:
        sys.stdout.write(json.dumps({**doc, "age_s": round(age, 1), "stale": stale}) + "\n")
        return 1 if stale else 0
    label = "STOPPED " if not doc.get("running", False) else ("STALE " if stale else "")
    link, box, ble = doc.get("link", {}), doc.get("outbox", {}), doc.get("ble") or {}
    out = [
        f"gateway {doc.get('gateway_id')}  {label}(updated {age:.0f} s ago, pid {doc.get('pid')})",
        f"link    {link.get('state')}  {link.get('broker')}"
        + (f"  error: {link['last_error']}" if link.get("last_error") else ""),
        f"outbox  {box.get('depth')} waiting, {box.get('dropped')} dropped (max {box.get('max_readings')})",
    ]
    if ble.get("scanner_error"):
        out.append(f"ble     {ble['scanner_error']}")
    for d in doc.get("devices", []):
        last = d.get("last_reading") or {}
        reading = (
            f"{last.get('metric')}={last.get('value')} {last.get('unit')} at {last.get('measured_at')}" if last else "-"
        )
        out.append(
            f"device  {d['address']} {d['device_id']} ({d['kind']}) {'connected' if d.get('connected') else 'idle'}"
            f"  readings {d.get('readings')}  last {reading}"
            + (f"  decode errors {d['decode_errors']}" if d.get("decode_errors") else "")
            + (f"  last error: {d['last_error']}" if d.get("last_error") else "")
        )
    sys.stdout.write("\n".join(out) + "\n")
    return 1 if stale else 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m gateway_agent.cli gateway run ...``) for boxes without the server stack."""
    parser = argparse.ArgumentParser(prog="tbib")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
