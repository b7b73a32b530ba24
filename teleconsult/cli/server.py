"""`tbib server`: run the API, dashboard and websockets server."""

from __future__ import annotations

from typing import Any

from teleconsult.cli.common import add_stub


def add_parser(sub: Any) -> None:
    """Register `tbib server`."""
    add_stub(sub, "server", "run the API, dashboard and websockets server", 7)
