"""`tbib gateway`: the home gateway (not built yet: issue 4)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `tbib gateway`."""
    parser = sub.add_parser("gateway", help="run, scan, enrol or inspect the home gateway (not implemented yet)")
    parser.set_defaults(func=_run)


def _run(_args: argparse.Namespace) -> int:
    sys.stderr.write("tbib gateway: not implemented yet (issue 4)\n")
    return 2
