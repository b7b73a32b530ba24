"""`tbib bench`: benchmarks (ingest, gateway, alerts, call).

Each subcommand hands its remaining arguments to ``<module>.main(argv) -> int`` (imported lazily, so that a missing
extra only breaks its own benchmark). The last stdout line of a benchmark run with ``--json`` is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Final

#: subcommand -> (module with ``main(argv) -> int``, help)
BENCHMARKS: Final[dict[str, tuple[str, str]]] = {
    "ingest": ("teleconsult.bench.ingest", "MQTT -> TimescaleDB ingest throughput, vs raw COPY and naive INSERT"),
    "gateway": ("gateway_agent.bench", "gateway agent: BLE notifications -> outbox -> MQTT"),
    "alerts": ("teleconsult.bench.alerts", "alert engine throughput and latency"),
    "call": ("teleconsult.bench.call", "teleconsultation call setup and vitals latency"),
    "dashboard": ("teleconsult.bench.dashboard", "dashboard: patient list time to interactive, frame budget"),
    "fanout": ("teleconsult.bench.fanout", "websocket fan-out: 1 000 dashboard sockets on one node, delivery latency"),
    "fhir": ("teleconsult.bench.fhir", "FHIR R4: search p95 over millions of rows, $everything paging, import obs/s"),
    "history": ("teleconsult.bench.history", "chart history 7/30/90 d -> 1 000 points from rollups, vs raw scan"),
    "broker": ("teleconsult.bench.broker", "RabbitMQ / NATS 3-node clusters, kill -9 a node: lost/dup, failover"),
    "pgfailover": (
        "teleconsult.bench.pgfailover",
        "Patroni pair: kill -9 the PostgreSQL leader: failover, lost/dup",
    ),
    "cluster": ("teleconsult.bench.cluster", "2 API nodes behind HAProxy: kill -9 a node, then the alert leader"),
    "prescriptions": ("teleconsult.bench.prescriptions", "e-prescriptions: concurrent dispenses, never over, tamper"),
}


def add_parser(sub: Any) -> None:
    """Register `tbib bench` and its subcommands."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "bench", help="benchmarks (ingest, gateway, alerts, call)", description=__doc__
    )
    bsub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        p = bsub.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
        p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the benchmark (see --help)")
        p.set_defaults(func=_runner(name, module))


def _runner(name: str, module_name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                print(f"tbib bench {name}: not implemented yet", file=sys.stderr)
                return 2
            raise
        code: int = module.main(list(args.rest))
        return code

    return run
