"""`tbib consult`: join a teleconsultation from the patient side (not built yet: issue 8)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `tbib consult`."""
    parser = sub.add_parser("consult", help="join a teleconsultation as the patient agent (not implemented yet)")
    parser.set_defaults(func=_run)


def _run(_args: argparse.Namespace) -> int:
    sys.stderr.write("tbib consult: not implemented yet (issue 8)\n")
    return 2
