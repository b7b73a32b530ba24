"""Shared by the security commands: where the database is (``--database-url`` or the server settings)."""

from __future__ import annotations

import argparse
from pathlib import Path

from teleconsult.cli.common import CliError


def add_db_arguments(p: argparse.ArgumentParser) -> None:
    """``--database-url`` and ``--config``."""
    p.add_argument("--database-url", help="PostgreSQL URL (default: TBIB_DATABASE_URL / settings)")
    p.add_argument("--config", type=Path, help="TOML settings file (default: $TBIB_CONFIG)")


def database_url(args: argparse.Namespace) -> str:
    """The URL from the arguments, else from the settings."""
    if args.database_url:
        return str(args.database_url)
    from teleconsult.errors import ConfigError
    from teleconsult.settings import load_settings

    try:
        return load_settings(args.config).database_url
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
