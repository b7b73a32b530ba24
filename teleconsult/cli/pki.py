"""`tbib pki`: development certificate authority."""

from __future__ import annotations

from typing import Any

from teleconsult.cli.common import add_stub


def add_parser(sub: Any) -> None:
    """Register `tbib pki`."""
    add_stub(sub, "pki", "development certificate authority", 6)
