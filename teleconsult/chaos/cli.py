"""`tbib chaos`: zero loss under a seeded schedule of kill -9, crashes and pauses of every component.

The last stdout line is the JSON summary with ``--json`` (otherwise a human table); progress goes to stderr. Exit code
0 when every captured reading is stored exactly once, the outboxes are empty and (with ``--alert-nodes``) no expected
alert episode was missed or stored twice, 1 otherwise (the seed and the missing ids are printed), 2 on a usage or
set-up error.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, Final

from teleconsult.cli.common import CliError

#: Named link profiles (kept here so that ``tbib --help`` does not import the emulator).
PROFILE_NAMES: Final = ("clean", "loss1", "loss5", "jitter", "reorder", "capped", "5g")


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
    p.add_argument("--patients", type=int, default=1, help="simulated patients per gateway, 2 readings/s each (1)")
    p.add_argument(
        "--link",
        metavar="PROFILE",
        help="run each gateway behind an emulated link (netns + veth + tc): "
        + ", ".join(PROFILE_NAMES)
        + ", or loss=2%%,delay=175ms,jitter=125ms,reorder=5%%,rate=10MB/s (needs CAP_NET_ADMIN and CAP_SYS_ADMIN)",
    )
    p.add_argument("--link-backend", choices=("auto", "netem", "delay-line"), default="auto",
                   help="auto: tc netem when the kernel has it, else the TUN delay line")  # fmt: skip
    p.add_argument("--link-outages", action="store_true", help="add link_outage faults (black hole on one link)")
    p.add_argument("--link-outage-s", type=float, default=60.0, help="seconds of each link outage (default 60)")
    p.add_argument(
        "--long-outage",
        type=int,
        default=0,
        metavar="READINGS",
        help="after the faults, black-hole every link until READINGS are queued, then time the catch-up "
        "and check the dashboard API (e.g. 10000; needs --link)",
    )
    p.add_argument(
        "--alert-nodes",
        type=int,
        default=0,
        metavar="N",
        help="run N tbib server nodes with the alert engine (one leads); N >= 2 adds alert_leader_kill9 faults and "
        "the run counts alerts_missed/alerts_duplicated against an offline evaluation (default 0: no alerts)",
    )
    p.add_argument("--alert-scenario", default="hypoxia", metavar="NAME",
                   help="with --alert-nodes: each gateway's patient deteriorates under NAME (default hypoxia; "
                   "'stable' for none)")  # fmt: skip
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep logs, outboxes and capture logs in DIR")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from teleconsult.chaos.netem import LinkError, parse_profile
    from teleconsult.chaos.processes import ChaosError
    from teleconsult.chaos.runner import ChaosConfig, run

    try:
        lo, hi = (float(x) for x in args.pause.split(","))
    except ValueError as exc:
        raise CliError("--pause takes MIN,MAX seconds", exit_code=2) from exc
    if args.faults < 0 or args.gateways < 1 or args.workers < 1 or args.patients < 1 or not 0 < lo <= hi:
        raise CliError("--faults >= 0, --gateways/--workers/--patients >= 1, --pause 0 < MIN <= MAX", exit_code=2)
    if args.alert_nodes < 0 or (args.alert_nodes and args.alert_scenario != "stable" and args.patients != 1):
        raise CliError("--alert-nodes >= 0; a deterioration scenario needs --patients 1", exit_code=2)
    if (args.long_outage or args.link_outages) and not args.link:
        raise CliError("--long-outage and --link-outages need --link PROFILE", exit_code=2)
    try:
        link = parse_profile(args.link) if args.link else None
    except LinkError as exc:
        raise CliError(str(exc), exit_code=2) from exc
    config = ChaosConfig(
        faults=args.faults, seed=args.seed, gateways=args.gateways, workers=args.workers, interval_s=args.interval,
        pause_s=(lo, hi), receipt_timeout_s=args.receipt_timeout, receipts=args.receipts,
        keep_dir=args.keep, patients=args.patients, link=link, link_backend=args.link_backend,
        link_outages=args.link_outages, link_outage_s=args.link_outage_s, long_outage=args.long_outage,
        alert_nodes=args.alert_nodes, alert_scenario=None if args.alert_scenario == "stable" else args.alert_scenario,
    )  # fmt: skip
    # SIGINT too: a command started as a background job of a non-interactive shell (CI runners, `make … &`) inherits
    # SIGINT ignored, and Python then installs no Ctrl-C handler; the run must still stop and clean up.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:  # each becomes KeyboardInterrupt, as Ctrl-C: the run's finally removes namespaces and processes
        summary = run(config, _progress)
    except (ChaosError, LinkError) as exc:
        raise CliError(str(exc), exit_code=2) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        for key, value in summary.items():
            sys.stdout.write(f"{key:40} {value}\n")
    return 0 if summary["ok"] else 1


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
