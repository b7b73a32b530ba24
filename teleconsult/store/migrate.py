"""Versioned SQL migrations: ``teleconsult/store/migrations/NNNN_name.sql`` applied in lexical order.

Contract
- Every file is applied at most once, in its own transaction, and recorded in ``schema_migrations(name, flavour,
  applied_at)``. ``upgrade()`` is re-runnable: already applied names are skipped. A session advisory lock
  (:data:`LOCK_KEY`) serializes concurrent upgraders (two servers starting at once).
- A file may be split into sections by marker lines: ``-- tbib:common`` (default, runs everywhere),
  ``-- tbib:timescaledb`` (runs only on the TimescaleDB flavour) and ``-- tbib:plain`` (runs only on plain PostgreSQL).
- Flavour: the flavour recorded by the first applied migration wins (a database never changes flavour half-way);
  on a fresh database it is ``timescaledb`` when the extension is installed in that database. ``timescaledb=True``
  creates the extension first when the cluster offers it (``tbib db upgrade`` does), ``False`` forces plain.
- Numbering ranges: 0001-0099 core (store), 0100-0199 security, 0200-0299 alerts, 0300-0399 consultations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Final, Literal

import psycopg
from psycopg import sql

from teleconsult.errors import MigrationError

Flavour = Literal["timescaledb", "plain"]

#: pg_advisory_lock key (ASCII "tbibmigr").
LOCK_KEY: Final = 0x7462_6962_6D69_6772
_NAME_RE: Final = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")
_MARKER_RE: Final = re.compile(r"^--\s*tbib:(common|timescaledb|plain)\s*$")

_BOOTSTRAP: Final = """
create table if not exists schema_migrations (
    name text primary key,
    flavour text not null,
    applied_at timestamptz not null default now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    name: str
    text: str

    def sql_for(self, flavour: Flavour) -> str:
        """The statements of this file that apply to ``flavour`` (common sections plus the flavour's own)."""
        section = "common"
        out: list[str] = []
        for line in self.text.splitlines():
            m = _MARKER_RE.match(line.strip())
            if m:
                section = m.group(1)
                continue
            if section in ("common", flavour):
                out.append(line)
        return "\n".join(out)


def load_migrations() -> list[Migration]:
    """All migration files shipped in the package, sorted by name."""
    root = resources.files("teleconsult.store") / "migrations"
    found = [
        Migration(entry.name, entry.read_text(encoding="utf-8"))
        for entry in root.iterdir()
        if entry.is_file() and entry.name.endswith(".sql")
    ]
    for m in found:
        if not _NAME_RE.match(m.name):
            raise MigrationError("migration file names must look like 0001_name.sql", name=m.name)
    return sorted(found, key=lambda m: m.name)


def _detect_flavour(conn: psycopg.Connection[tuple[object, ...]], timescaledb: bool | None) -> Flavour:
    row = conn.execute("select flavour from schema_migrations order by name limit 1").fetchone()
    if row is not None:
        recorded: Flavour = "timescaledb" if row[0] == "timescaledb" else "plain"
        if timescaledb is False and recorded == "timescaledb":
            raise MigrationError("database already uses TimescaleDB; cannot force plain", name="(flavour)")
        return recorded
    if timescaledb is False:
        return "plain"
    if timescaledb:
        available = conn.execute(
            "select 1 from pg_available_extensions where name = 'timescaledb'"
            " and current_setting('shared_preload_libraries') like '%timescaledb%'"
        ).fetchone()
        if available is not None:
            conn.execute("create extension if not exists timescaledb")
    installed = conn.execute("select 1 from pg_extension where extname = 'timescaledb'").fetchone()
    return "timescaledb" if installed is not None else "plain"


def database_flavour(conninfo: str) -> Flavour | None:
    """The flavour recorded in the database, or ``None`` when it was never upgraded."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("select to_regclass('schema_migrations')").fetchone()
        if exists is None or exists[0] is None:
            return None
        row = conn.execute("select flavour from schema_migrations order by name limit 1").fetchone()
    if row is None:
        return None
    return "timescaledb" if row[0] == "timescaledb" else "plain"


def upgrade(conninfo: str, *, timescaledb: bool | None = None) -> list[str]:
    """Apply every pending migration; returns the names applied by this call (empty when up to date)."""
    migrations = load_migrations()
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute(_BOOTSTRAP)
            flavour = _detect_flavour(conn, timescaledb)
            done = {str(r[0]) for r in conn.execute("select name from schema_migrations").fetchall()}
            for migration in migrations:
                if migration.name in done:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL(migration.sql_for(flavour)))
                        conn.execute(
                            "insert into schema_migrations (name, flavour) values (%s, %s)", (migration.name, flavour)
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"{migration.name} failed: {exc}", name=migration.name) from exc
                applied_now.append(migration.name)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied_now


async def upgrade_async(conninfo: str, *, timescaledb: bool | None = None) -> list[str]:
    """:func:`upgrade` from asyncio code (runs in a thread; migrations are rare and short)."""
    import asyncio

    return await asyncio.to_thread(upgrade, conninfo, timescaledb=timescaledb)


def status(conninfo: str) -> list[tuple[str, bool]]:
    """Every known migration with whether it is applied."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("select to_regclass('schema_migrations')").fetchone()
        done: set[str] = set()
        if exists is not None and exists[0] is not None:
            done = {str(r[0]) for r in conn.execute("select name from schema_migrations").fetchall()}
    return [(m.name, m.name in done) for m in load_migrations()]
