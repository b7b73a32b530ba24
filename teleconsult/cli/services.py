"""`tbib services up|down|status|env|cluster|pgcluster`: our own PostgreSQL/TimescaleDB, Mosquitto and coturn, the
broker clusters and the Patroni PostgreSQL pair (scripts/services.sh)."""

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
    parser.add_argument("action", choices=["up", "down", "status", "env", "cluster", "pgcluster"], help="what to do")
    parser.add_argument(
        "cluster_args",
        nargs="*",
        metavar="ARG",
        help="after 'cluster': up|down|status [all|rabbitmq|nats] (3-node broker clusters); after 'pgcluster':"
        " up|down|status (Patroni + etcd + HAProxy PostgreSQL pair); docs/scale-out.md",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not SCRIPT.exists():
        raise CliError(f"{SCRIPT} not found: 'tbib services' works from a source checkout only")
    extra: list[str] = list(args.cluster_args)
    if args.action == "cluster":
        if not extra or extra[0] not in ("up", "down", "status") or len(extra) > 2:
            raise CliError("usage: tbib services cluster up|down|status [all|rabbitmq|nats]")
    elif args.action == "pgcluster":
        if len(extra) != 1 or extra[0] not in ("up", "down", "status"):
            raise CliError("usage: tbib services pgcluster up|down|status")
    elif extra:
        raise CliError(f"'tbib services {args.action}' takes no further arguments")
    return subprocess.run([str(SCRIPT), args.action, *extra], check=False).returncode  # noqa: S603
