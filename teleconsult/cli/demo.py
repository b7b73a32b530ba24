"""`tbib demo`: run the whole system locally with simulated patients (see docs/dashboard.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `tbib demo`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run the whole system locally with simulated patients",
        description="Start a database and an MQTT broker (TBIB_DATABASE_URL / TBIB_MQTT_URL when set, else the "
        "project's own services, else an embedded PostgreSQL), the server, the ingest worker and K simulated "
        "gateways under deterioration scenarios; print the dashboard URL and the demo doctor's login; run until "
        "Ctrl-C, then stop everything it started (data kept in --data-dir).",
    )
    p.add_argument("--patients", type=int, default=6, help="simulated patients (default 6, one per scenario)")
    p.add_argument("--port", type=int, default=8000, help="server port (default 8000; a free one if busy; 0: any)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--data-dir", type=Path, default=Path(".tbib-demo"), help="state and logs (default .tbib-demo)")
    p.add_argument("--onset", type=float, default=20.0, help="seconds before the deteriorations start (default 20)")
    p.add_argument(
        "--full-effect", type=float, default=90.0, help="seconds from onset to a scenario's full effect (default 90)"
    )
    p.add_argument(
        "--services",
        choices=["auto", "project", "embedded"],
        default="auto",
        help="where the database and broker come from when TBIB_DATABASE_URL/TBIB_MQTT_URL are not set: "
        "auto (default), project (scripts/services.sh: TimescaleDB + tuned Mosquitto), embedded (pgserver + mosquitto)",
    )
    p.add_argument(
        "--history-hours",
        type=float,
        default=24.0,
        help="on the first run, backfill this many hours of readings from the simulator (default 24; 0: none)",
    )
    p.add_argument("--no-consult-agent", action="store_true", help="do not start patient agents for consultations")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from teleconsult.cli.common import CliError
    from teleconsult.demo.runner import DemoConfig, run

    if not 1 <= args.patients <= 500:
        raise CliError("--patients must be between 1 and 500", exit_code=2)
    config = DemoConfig(
        data_dir=args.data_dir,
        patients=args.patients,
        host=args.host,
        port=args.port,
        onset_s=args.onset,
        full_effect_s=args.full_effect,
        consult_agents=not args.no_consult_agent,
        services=args.services,
        history_hours=args.history_hours,
    )
    return run(config, out=lambda line: print(line, flush=True))
