"""`tbib db`: database schema (``upgrade``, ``status``) and retention (``retention``).

The DSN comes from ``--dsn`` or ``TBIB_DATABASE_URL`` (then ``TBIB_TEST_DSN``, handy with ``scripts/services.sh``).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from teleconsult.cli.common import CliError, print_json


def dsn_from(args: argparse.Namespace) -> str:
    """The database DSN of a command: ``--dsn``, else ``TBIB_DATABASE_URL``, else ``TBIB_TEST_DSN``."""
    dsn: str | None = (
        getattr(args, "dsn", None) or os.environ.get("TBIB_DATABASE_URL") or os.environ.get("TBIB_TEST_DSN")
    )
    if not dsn:
        raise CliError("no database: pass --dsn or set TBIB_DATABASE_URL", exit_code=2)
    return dsn


def add_parser(sub: Any) -> None:
    """Register `tbib db`."""
    parser: argparse.ArgumentParser = sub.add_parser("db", help="database schema (upgrade, status)")
    dsub = parser.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)

    up = dsub.add_parser("upgrade", help="apply pending schema migrations (re-runnable)")
    up.add_argument("--dsn", help="PostgreSQL connection string (default: $TBIB_DATABASE_URL)")
    flavour = up.add_mutually_exclusive_group()
    flavour.add_argument(
        "--plain", action="store_true", help="never use TimescaleDB (default: create and use it when available)"
    )
    flavour.add_argument(
        "--no-create-extension",
        action="store_true",
        help="use TimescaleDB only if the extension is already installed in the database",
    )
    up.add_argument("--json", action="store_true", help="print one JSON object")
    up.set_defaults(func=_upgrade)

    st = dsub.add_parser("status", help="list migrations and whether they are applied")
    st.add_argument("--dsn", help="PostgreSQL connection string (default: $TBIB_DATABASE_URL)")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.set_defaults(func=_status)

    rt = dsub.add_parser("retention", help="delete readings past their retention, once")
    rt.add_argument("--dsn", help="PostgreSQL connection string (default: $TBIB_DATABASE_URL)")
    rt.add_argument("--default-days", type=int, default=5 * 365, help="keep metrics of no family this long (5 years)")
    rt.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="FAMILY:METRIC[,METRIC...]:DAYS",
        help="a family with its own retention, e.g. beat_to_beat:rr_interval:90 (default: that one)",
    )
    rt.add_argument("--json", action="store_true", help="print one JSON object")
    rt.set_defaults(func=_retention)


def _upgrade(args: argparse.Namespace) -> int:
    import psycopg

    from teleconsult.errors import MigrationError
    from teleconsult.store.migrate import database_flavour, upgrade

    dsn = dsn_from(args)
    timescaledb: bool | None = False if args.plain else (None if args.no_create_extension else True)
    try:
        applied = upgrade(dsn, timescaledb=timescaledb)
        flavour = database_flavour(dsn)
    except MigrationError as exc:
        raise CliError(str(exc)) from exc
    except psycopg.OperationalError as exc:
        raise CliError(f"cannot connect to the database: {exc}".strip()) from exc
    if args.json:
        print_json({"applied": applied, "flavour": flavour})
    else:
        print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''} (flavour: {flavour})")
    return 0


def _status(args: argparse.Namespace) -> int:
    import psycopg

    from teleconsult.store.migrate import database_flavour, status

    dsn = dsn_from(args)
    try:
        rows = status(dsn)
        flavour = database_flavour(dsn)
    except psycopg.OperationalError as exc:
        raise CliError(f"cannot connect to the database: {exc}".strip()) from exc
    if args.json:
        print_json({"flavour": flavour, "migrations": [{"name": n, "applied": a} for n, a in rows]})
    else:
        for name, applied in rows:
            print(f"{'applied' if applied else 'pending'}  {name}")
        print(f"flavour: {flavour or '(not upgraded yet)'}")
    return 0


def _retention(args: argparse.Namespace) -> int:
    import asyncio
    from datetime import UTC, datetime, timedelta

    import psycopg
    from psycopg_pool import AsyncConnectionPool

    from teleconsult.store.retention import DEFAULT_POLICY, RetentionPolicy, RetentionRule, apply_retention

    rules = []
    for text in args.rule:
        try:
            family, metrics, days = text.split(":")
            rules.append(RetentionRule(family, frozenset(metrics.split(",")), timedelta(days=int(days))))
        except ValueError as exc:
            raise CliError(f"bad --rule {text!r} (expected FAMILY:METRIC[,METRIC...]:DAYS)", exit_code=2) from exc
    policy = RetentionPolicy(
        rules=tuple(rules) if rules else DEFAULT_POLICY.rules, default_keep=timedelta(days=args.default_days)
    )
    dsn = dsn_from(args)

    async def run() -> dict[str, object]:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=1, open=False) as pool:
            r = await apply_retention(pool, policy, datetime.now(UTC))
        return {
            "dropped_chunks": r.dropped_chunks,
            "deleted_rows": r.deleted_rows,
            "dead_letters": r.dead_letters_deleted,
        }

    try:
        report = asyncio.run(run())
    except psycopg.OperationalError as exc:
        raise CliError(f"cannot connect to the database: {exc}".strip()) from exc
    if args.json:
        print_json(report)
    else:
        print(report)
    return 0
