"""`tbib` entry point.

Each command lives in its own module exposing ``add_parser(subparsers)``; the parser's ``func(args) -> int`` runs it.
Modules are imported by name so that a gateway-only install never imports the server stack, and so that
``teleconsult`` never imports ``gateway_agent`` at import time. User errors raise :class:`CliError` and print one line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Final

from teleconsult.cli.common import CliError

#: (command, module that provides ``add_parser``)
COMMANDS: Final[tuple[tuple[str, str], ...]] = (
    ("demo", "teleconsult.cli.demo"),
    ("server", "teleconsult.cli.server"),
    ("ingest", "teleconsult.cli.ingest"),
    ("db", "teleconsult.cli.db"),
    ("gateway", "gateway_agent.cli"),
    ("consult", "gateway_agent.consult_cli"),
    ("decode", "devices.cli"),
    ("news2", "teleconsult.cli.news2"),
    ("bench", "teleconsult.cli.bench"),
    ("users", "teleconsult.cli.users"),
    ("audit", "teleconsult.cli.audit"),
    ("pki", "teleconsult.cli.pki"),
    ("services", "teleconsult.cli.services"),
    ("fhir", "teleconsult.cli.fhir"),
    ("chaos", "teleconsult.chaos.cli"),
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="tbib",
        description="tbib: remote monitoring and teleconsultation with connected medical devices.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # an extra is not installed (e.g. a gateway-only box has no server stack)
            p = sub.add_parser(name, help=f"(unavailable: {exc.name} is not installed)")
            p.set_defaults(func=_unavailable(name, str(exc)))
            continue
        module.add_parser(sub)
    return parser


def _unavailable(name: str, reason: str) -> object:
    def run(_args: argparse.Namespace) -> int:
        raise CliError(f"'tbib {name}' is unavailable on this install: {reason}", exit_code=2)

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"tbib {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
