"""`tbib audit`: verify the audit hash chain."""

from __future__ import annotations

from typing import Any

from teleconsult.cli.common import add_stub


def add_parser(sub: Any) -> None:
    """Register `tbib audit`."""
    add_stub(sub, "audit", "verify the audit hash chain", 6)
