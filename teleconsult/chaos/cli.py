"""`tbib chaos`: zero loss under a seeded schedule of kill -9, crashes and pauses of every component.

The last stdout line is the JSON summary with ``--json`` (otherwise a human table); progress goes to stderr. Exit code
0 when every captured reading is stored exactly once and the outboxes are empty, 1 otherwise (the seed and the
missing ids are printed), 2 on a usage or set-up error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from teleconsult.cli.common import CliError


def add_parser(sub: Any) -> None:
    """Register `tbib chaos`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "chaos", help="fault-injection run: lost/duplicated readings under kill -9"
    )
    p.add_argument("--faults", type=int, default=50, help="number of faults (default 50)")
    p.add_argument("--seed", type=int, default=1, help="seed of the fault schedule (default 1)")
    p.add_argument("--gateways", type=int, default=4, help="simulated gateways (default 4)")
    p.add_argument("--workers", type=int, default=2, help="tbib ingest workers (default 2)")
    p.add_argument("--interval", type=float, default=6.0, help="mean seconds between faults (default 6)")
    p.add_argument("--pause", default="10,40", metavar="MIN,MAX", help="SIGSTOP duration range in s (default 10,40)")
    p.add_argument("--receipt-timeout", type=float, default=5.0, help="gateways' receipt timeout in s (default 5)")
    p.add_argument(
        "--no-receipts",
        dest="receipts",
        action="store_false",
        help="control run: gateways in PUBACK mode (delete on PUBACK), to see what receipts prevent",
    )
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep logs, outboxes and capture logs in DIR")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from teleconsult.chaos.processes import ChaosError
    from teleconsult.chaos.runner import ChaosConfig, run

    try:
        lo, hi = (float(x) for x in args.pause.split(","))
    except ValueError as exc:
        raise CliError("--pause takes MIN,MAX seconds", exit_code=2) from exc
    if args.faults < 0 or args.gateways < 1 or args.workers < 1 or not 0 < lo <= hi:
        raise CliError("--faults >= 0, --gateways/--workers >= 1, --pause 0 < MIN <= MAX", exit_code=2)
    config = ChaosConfig(
        faults=args.faults, seed=args.seed, gateways=args.gateways, workers=args.workers, interval_s=args.interval,
        pause_s=(lo, hi), receipt_timeout_s=args.receipt_timeout, receipts=args.receipts,
        keep_dir=args.keep,
    )  # fmt: skip
    try:
        summary = run(config, _progress)
    except ChaosError as exc:
        raise CliError(str(exc), exit_code=2) from exc
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        for key, value in summary.items():
            sys.stdout.write(f"{key:40} {value}\n")
    return 0 if summary["ok"] else 1


def _progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
