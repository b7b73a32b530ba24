"""`tbib audit verify`: check the audit log's hash chain; names the first broken row (exit 1)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from teleconsult.cli._db import add_db_arguments, database_url
from teleconsult.cli.common import CliError


def add_parser(sub: Any) -> None:
    """Register `tbib audit`."""
    p: argparse.ArgumentParser = sub.add_parser("audit", help="verify the audit hash chain", description=__doc__)
    cmds = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = cmds.add_parser("verify", help="recompute every hash; exit 1 naming the first broken row")
    add_db_arguments(v)
    v.set_defaults(func=run_verify)


def verify(dsn: str) -> int:
    """Number of rows in a valid chain; raises ``AuditChainError`` at the first bad row."""
    import psycopg

    from teleconsult.security import audit

    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("set transaction isolation level repeatable read")
        head_row = conn.execute("select last_id, last_hash from audit_chain_head where singleton").fetchone()
        head = (int(head_row[0]), bytes(head_row[1])) if head_row else None

        def rows() -> Iterator[audit.AuditRow]:
            with conn.cursor(name="tbib_audit_verify") as cur:
                cur.itersize = 5000
                cur.execute(f"select {audit.COLUMNS} from audit_events order by id")  # noqa: S608 - constant columns
                for rec in cur:
                    yield audit.row_from_record(rec)

        return audit.verify_rows(rows(), head)


def run_verify(args: argparse.Namespace) -> int:
    """CLI entry."""
    import psycopg

    from teleconsult.errors import AuditChainError

    try:
        count = verify(database_url(args))
    except AuditChainError as exc:
        print(f"FAILED: {exc}")
        return 1
    except psycopg.Error as exc:
        raise CliError(f"database error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    print(f"ok: audit chain of {count} rows verified")
    return 0
