"""`tbib news2`: compute a NEWS2 score from observations."""

from __future__ import annotations

from typing import Any

from teleconsult.cli.common import add_stub


def add_parser(sub: Any) -> None:
    """Register `tbib news2`."""
    add_stub(sub, "news2", "compute a NEWS2 score from observations", 7)
