"""`tbib db`: database schema (``upgrade``, ``status``), retention (``retention``) and rollups (``rebuild-rollups``).

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
    parser: argparse.ArgumentParser = sub.add_parser("db", help="database schema, retention, rollups")
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
    rt.add_argument(
        "--minute-rollup-days", type=int, default=10 * 365, help="keep readings_1m this long (default 10 years)"
    )
    rt.add_argument("--hour-rollup-days", type=int, default=0, help="keep readings_1h this long (default 0: forever)")
    rt.add_argument("--json", action="store_true", help="print one JSON object")
    rt.set_defaults(func=_retention)

    rb = dsub.add_parser(
        "rebuild-rollups",
        help="recompute readings_1m/readings_1h from raw readings, one chunk per transaction",
        description="Recompute the per-minute and hourly rollups from the raw rows (after a bulk load that bypassed"
        " ingest, or to repair them). Ingest may keep running: each chunk locks the rollup tables until it commits.",
    )
    rb.add_argument("--dsn", help="PostgreSQL connection string (default: $TBIB_DATABASE_URL)")
    rb.add_argument("--patient", help="only this patient (uuid)")
    rb.add_argument("--since", help="start (ISO 8601 with offset; default: the oldest raw reading)")
    rb.add_argument("--until", help="end, exclusive (ISO 8601 with offset; default: the newest raw reading)")
    rb.add_argument("--chunk-hours", type=int, default=24, help="hours per transaction (default 24)")
    rb.add_argument("--json", action="store_true", help="print one JSON object (the progress bar stays on stderr)")
    rb.set_defaults(func=_rebuild_rollups)


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
        rules=tuple(rules) if rules else DEFAULT_POLICY.rules,
        default_keep=timedelta(days=args.default_days),
        minute_rollup_keep=timedelta(days=args.minute_rollup_days) if args.minute_rollup_days > 0 else None,
        hour_rollup_keep=timedelta(days=args.hour_rollup_days) if args.hour_rollup_days > 0 else None,
    )
    dsn = dsn_from(args)

    async def run() -> dict[str, object]:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=1, open=False) as pool:
            r = await apply_retention(pool, policy, datetime.now(UTC))
        return {
            "dropped_chunks": r.dropped_chunks,
            "deleted_rows": r.deleted_rows,
            "dead_letters": r.dead_letters_deleted,
            "rollup_chunks_dropped": r.rollup_chunks_dropped,
            "rollup_rows_deleted": r.rollup_rows_deleted,
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


def _when(text: str | None, flag: str) -> Any:
    from datetime import datetime

    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CliError(f"bad {flag} {text!r} (expected ISO 8601 with an offset)", exit_code=2) from exc
    if t.tzinfo is None:
        raise CliError(f"{flag} needs an offset (e.g. 2026-11-01T00:00:00+00:00)", exit_code=2)
    return t


def progress_bar(stream: Any, width: int = 30) -> Any:
    """A ``progress(done, total)`` callback drawing ``[#####.....] done/total chunks`` on ``stream``."""
    import time

    started = time.monotonic()

    def show(done: int, total: int) -> None:
        filled = width * done // max(total, 1)
        eta = (time.monotonic() - started) / max(done, 1) * (total - done)
        bar = "#" * filled + "." * (width - filled)
        stream.write(f"\rrebuild-rollups [{bar}] {done}/{total} chunks, eta {eta:.0f} s")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show


def _rebuild_rollups(args: argparse.Namespace) -> int:
    import asyncio
    import sys
    import time
    import uuid
    from datetime import timedelta

    import psycopg

    from teleconsult.store.rollups import rebuild

    dsn = dsn_from(args)
    try:
        patient = uuid.UUID(args.patient) if args.patient else None
    except ValueError as exc:
        raise CliError(f"bad --patient {args.patient!r} (expected a uuid)", exit_code=2) from exc
    if args.chunk_hours < 1:
        raise CliError("--chunk-hours must be >= 1", exit_code=2)
    since, until = _when(args.since, "--since"), _when(args.until, "--until")

    async def run() -> dict[str, object]:
        t0 = time.perf_counter()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            r = await rebuild(
                conn,
                start=since,
                end=until,
                patient_id=patient,
                chunk=timedelta(hours=args.chunk_hours),
                progress=progress_bar(sys.stderr),
            )
        return {
            "chunks": r.chunks,
            "minute_rows": r.minute_rows,
            "hour_rows": r.hour_rows,
            "start": r.start.isoformat() if r.start else None,
            "end": r.end.isoformat() if r.end else None,
            "seconds": round(time.perf_counter() - t0, 3),
        }

    try:
        report = asyncio.run(run())
    except psycopg.OperationalError as exc:
        raise CliError(f"cannot connect to the database: {exc}".strip()) from exc
    if args.json:
        print_json(report)
    else:
        print(
            f"rebuilt {report['minute_rows']} minute and {report['hour_rows']} hour rows"
            f" in {report['chunks']} chunk(s), {report['seconds']} s"
        )
    return 0
