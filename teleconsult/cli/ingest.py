"""`tbib ingest`: run the MQTT-to-database ingest worker (standalone; `tbib server` embeds the same worker).

Settings: flags, else ``TBIB_DATABASE_URL`` / ``TBIB_MQTT_URL`` (then ``TBIB_TEST_DSN`` / ``TBIB_TEST_MQTT_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from typing import Any

from teleconsult.cli.common import CliError


def add_parser(sub: Any) -> None:
    """Register `tbib ingest`."""
    p: argparse.ArgumentParser = sub.add_parser("ingest", help="run the MQTT-to-database ingest worker")
    p.add_argument("--dsn", help="PostgreSQL connection string (default: $TBIB_DATABASE_URL)")
    p.add_argument("--mqtt-url", help="broker, mqtt://host:port (default: $TBIB_MQTT_URL)")
    p.add_argument(
        "--client-id",
        default=f"tbib-ingest-{socket.gethostname()}",
        help="stable MQTT client id of this worker (its broker session survives crashes)",
    )
    p.add_argument(
        "--topic",
        default="$share/tbib-ingest/tbib/v1/gw/+/readings",
        help="subscription (default: the shared subscription of all ingest workers)",
    )
    p.add_argument("--batch", type=int, default=10_000, help="max readings per transaction (default 10000)")
    p.add_argument("--linger-ms", type=float, default=50.0, help="max wait to fill a batch (default 50 ms)")
    p.add_argument("--writers", type=int, default=2, help="concurrent transactions (default 2)")
    p.add_argument("--receive-maximum", type=int, default=3000, help="max unacknowledged messages in flight")
    p.add_argument(
        "--receipts",
        choices=["range", "ids", "off"],
        default="range",
        help="commit receipts to gateways: batch names (default), every committed id, or none (docs/mqtt.md)",
    )
    p.add_argument("--metrics-port", type=int, help="serve Prometheus text on 127.0.0.1:PORT")
    p.add_argument(
        "--amqp-url",
        action="append",
        metavar="URL",
        help="consume the RabbitMQ quorum queue instead of MQTT; repeat for every node (docs/scale-out.md)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from teleconsult.errors import IngestError
    from teleconsult.ingest.worker import IngestConfig, run

    dsn = args.dsn or os.environ.get("TBIB_DATABASE_URL") or os.environ.get("TBIB_TEST_DSN")
    mqtt_url = args.mqtt_url or os.environ.get("TBIB_MQTT_URL") or os.environ.get("TBIB_TEST_MQTT_URL")
    if not dsn:
        raise CliError("no database: pass --dsn or set TBIB_DATABASE_URL", exit_code=2)
    if args.amqp_url:
        return _run_amqp(args, dsn)
    if not mqtt_url:
        raise CliError("no broker: pass --mqtt-url or set TBIB_MQTT_URL", exit_code=2)
    if args.batch < 1 or args.writers < 1 or not 1 <= args.receive_maximum <= 65535:
        raise CliError("--batch and --writers must be >= 1, --receive-maximum in 1..65535", exit_code=2)
    config = IngestConfig(
        dsn=dsn,
        mqtt_url=mqtt_url,
        client_id=args.client_id,
        topic=args.topic,
        max_batch_readings=args.batch,
        linger_s=args.linger_ms / 1000,
        writers=args.writers,
        receive_maximum=args.receive_maximum,
        receipts=None if args.receipts == "off" else args.receipts,
    )
    try:
        asyncio.run(run(config, metrics_port=args.metrics_port))
    except IngestError as exc:
        raise CliError(str(exc), exit_code=2) from exc
    return 0


def _run_amqp(args: argparse.Namespace, dsn: str) -> int:
    from teleconsult.ingest.brokers.amqp import AmqpIngestConfig, run

    if any(not u.startswith(("amqp://", "amqps://")) for u in args.amqp_url):
        raise CliError("--amqp-url must start with amqp:// or amqps://", exit_code=2)
    if args.batch < 1:
        raise CliError("--batch must be >= 1", exit_code=2)
    config = AmqpIngestConfig(
        dsn=dsn,
        amqp_urls=tuple(args.amqp_url),
        max_batch_readings=args.batch,
        linger_s=args.linger_ms / 1000,
        receipts=None if args.receipts == "off" else args.receipts,
    )
    asyncio.run(run(config, metrics_port=args.metrics_port))
    return 0
