"""`tbib users`: manage user accounts."""

from __future__ import annotations

from typing import Any

from teleconsult.cli.common import add_stub


def add_parser(sub: Any) -> None:
    """Register `tbib users`."""
    add_stub(sub, "users", "manage user accounts", 6)
