"""`tbib bench`: benchmarks (ingest, alerts, call, gateway)."""

from __future__ import annotations

from typing import Any

from teleconsult.cli.common import add_stub


def add_parser(sub: Any) -> None:
    """Register `tbib bench`."""
    add_stub(sub, "bench", "benchmarks (ingest, alerts, call, gateway)", 5)
