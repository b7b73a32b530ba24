"""`tbib decode`: decode a Bluetooth SIG characteristic value (not built yet: issue 3)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `tbib decode`."""
    parser = sub.add_parser("decode", help="decode a GATT characteristic value given as hex (not implemented yet)")
    parser.set_defaults(func=_run)


def _run(_args: argparse.Namespace) -> int:
    sys.stderr.write("tbib decode: not implemented yet (issue 3)\n")
    return 2
