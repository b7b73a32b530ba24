"""`tbib demo`: run the whole system locally with simulated patients."""

from __future__ import annotations

from typing import Any

from teleconsult.cli.common import add_stub


def add_parser(sub: Any) -> None:
    """Register `tbib demo`."""
    add_stub(sub, "demo", "run the whole system locally with simulated patients", 9)
