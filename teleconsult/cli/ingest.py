"""`tbib ingest`: run the MQTT-to-database ingest worker."""

from __future__ import annotations

from typing import Any

from teleconsult.cli.common import add_stub


def add_parser(sub: Any) -> None:
    """Register `tbib ingest`."""
    add_stub(sub, "ingest", "run the MQTT-to-database ingest worker", 5)
