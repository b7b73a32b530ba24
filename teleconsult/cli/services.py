"""`tbib services up|down|status|env`: our own PostgreSQL/TimescaleDB, Mosquitto and coturn (scripts/services.sh)."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from teleconsult.cli.common import CliError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services.sh"


def add_parser(sub: Any) -> None:
    """Register `tbib services`."""
    parser = sub.add_parser("services", help="start/stop the project's own TimescaleDB, Mosquitto and coturn for tests")
    parser.add_argument("action", choices=["up", "down", "status", "env"], help="what to do")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not SCRIPT.exists():
        raise CliError(f"{SCRIPT} not found: 'tbib services' works from a source checkout only")
    return subprocess.run([str(SCRIPT), args.action], check=False).returncode  # noqa: S603
