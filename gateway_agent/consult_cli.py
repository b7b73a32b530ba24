"""`tbib consult join --token T [--server URL]`: join a teleconsultation as the patient's gateway agent.

Exit codes: 0 the consultation ended (or Ctrl-C after a clean leave), 1 refused (bad/expired token, denied, room full,
server unreachable), 2 usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from gateway_agent.consult import ConsultAgent, ConsultConfig, VitalReading
from gateway_agent.errors import ConsultError

DEFAULT_SERVER: Final = "http://127.0.0.1:8000"
SIGNALING_PATH: Final = "/ws/v1/signaling"


def add_parser(sub: Any) -> None:
    """Register `tbib consult`."""
    parser = sub.add_parser("consult", help="join a teleconsultation as the patient's gateway agent")
    commands = parser.add_subparsers(dest="consult_command", metavar="SUBCOMMAND", required=True)
    join = commands.add_parser("join", help="join with a token from the doctor or the patient app and serve the call")
    join.add_argument("--token", required=True, help="join token (role agent or patient) issued by the server")
    join.add_argument(
        "--server",
        default=os.environ.get("TBIB_SERVER_URL", DEFAULT_SERVER),
        help=f"server base URL or signaling websocket URL (default $TBIB_SERVER_URL or {DEFAULT_SERVER})",
    )
    join.add_argument("--camera", default="/dev/video0", help="V4L2 camera; a test pattern is sent when absent")
    join.add_argument("--no-camera", action="store_true", help="always send the test pattern")
    join.add_argument("--microphone", default=None, help="ALSA capture device (e.g. default); none by default")
    join.add_argument(
        "--no-ice-servers", action="store_true", help="ignore the server's STUN/TURN list (host candidates only)"
    )
    join.add_argument(
        "--relay-only", action="store_true", help="TURN relay candidates only (check that TURN works from here)"
    )
    join.add_argument(
        "--turn-transport",
        choices=["udp", "tcp"],
        default=None,
        help="which TURN URL to use (aiortc uses one): tcp gets through networks that block UDP (default: udp first)",
    )
    join.add_argument(
        "--demo-vitals",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="send simulated readings on the vitals channel (demo and benchmark): heart rate and SpO2 every SECONDS, "
        "respiratory rate every ~5 s, a blood pressure, temperature, weight and glucose now and then",
    )
    join.set_defaults(func=_join)


def signaling_url(server: str) -> str:
    """``http(s)://host[:port]`` or ``ws(s)://...`` to the signaling websocket URL."""
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ConsultError(f"--server must be an http(s):// or ws(s):// URL, got {server!r}")
    path = parts.path if parts.path.endswith(SIGNALING_PATH) else parts.path.rstrip("/") + SIGNALING_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


async def demo_vitals(period_s: float, *, spot_every_s: float = 30.0) -> AsyncIterator[VitalReading]:
    """Plausible resting vitals, measured now: heart rate and SpO2 every ``period_s`` (a continuous oximeter), the
    respiratory rate every ~5 s, blood pressure and temperature every ``spot_every_s``, weight and glucose once."""
    rng = random.Random()  # noqa: S311 - simulated data, not security
    rr_every = max(1, round(5.0 / period_s))
    spot_every = max(1, round(spot_every_s / period_s))
    tick = 0
    while True:
        await asyncio.sleep(period_s)
        now = datetime.now(UTC)
        yield VitalReading("heart_rate", float(round(rng.gauss(72, 3))), "/min", now)
        yield VitalReading("spo2", float(min(100, round(rng.gauss(97, 0.7)))), "%", now)
        if tick % rr_every == 0:
            yield VitalReading("respiratory_rate", float(round(rng.gauss(16, 1))), "/min", now)
        if tick % spot_every == 0:
            yield VitalReading("systolic_bp", float(round(rng.gauss(124, 4))), "mm[Hg]", now)
            yield VitalReading("diastolic_bp", float(round(rng.gauss(79, 3))), "mm[Hg]", now)
            yield VitalReading("body_temperature", round(rng.gauss(36.8, 0.15), 1), "Cel", now)
        if tick == 0:
            yield VitalReading("body_weight", 71.4, "kg", now)
            yield VitalReading("glucose", 104.0, "mg/dL", now)
        tick += 1


async def _main(args: argparse.Namespace) -> int:
    config = ConsultConfig(
        server=signaling_url(args.server),
        token=args.token,
        camera=None if args.no_camera else args.camera,
        microphone=args.microphone,
        ice_servers=[] if args.no_ice_servers else None,
        ice_transport_policy="relay" if args.relay_only else "all",
        turn_transport=args.turn_transport,
    )
    agent = ConsultAgent(config, demo_vitals(args.demo_vitals) if args.demo_vitals > 0 else None)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(agent.stop()))
    reason = await agent.run()
    sys.stderr.write(f"tbib consult: call ended ({reason})\n")
    return 0


def _join(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args))
    except ConsultError as exc:
        sys.stderr.write(f"tbib consult: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    from argparse import ArgumentParser

    _parser = ArgumentParser(prog="python -m gateway_agent.consult_cli")
    add_parser(_parser.add_subparsers(dest="command", required=True))
    _args = _parser.parse_args()
    sys.exit(_args.func(_args))
