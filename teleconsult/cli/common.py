"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


class CliError(Exception):
    """A user error: printed as one line, no traceback."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_stub(sub: Any, name: str, help_text: str, issue: int) -> argparse.ArgumentParser:
    """Register a command that is not built yet: it says so and exits 2 (never fake output)."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=f"{help_text} (not implemented yet)")

    def run(_args: argparse.Namespace) -> int:
        raise CliError(f"not implemented yet (tracked in issue {issue})", exit_code=2)

    parser.set_defaults(func=run)
    return parser


def print_json(obj: object) -> None:
    """One JSON object on one line of stdout."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
