"""`tbib db`: database schema (upgrade)."""

from __future__ import annotations

from typing import Any

from teleconsult.cli.common import add_stub


def add_parser(sub: Any) -> None:
    """Register `tbib db`."""
    add_stub(sub, "db", "database schema (upgrade)", 5)
