"""Retention of readings and dead letters, per metric family. The server calls :func:`apply_retention` periodically.

- TimescaleDB: chunks older than the *longest* retention are dropped whole (``drop_chunks``: no row-by-row delete, no
  bloat); families with a shorter retention are deleted row-wise inside the remaining chunks (chunk exclusion keeps the
  delete on old chunks only).
- Plain PostgreSQL (BRIN-indexed table): rows are deleted in bounded batches (``batch_rows``) so that no single
  transaction holds locks for long; VACUUM (autovacuum) reclaims the space.
A family with ``keep=None`` is kept forever, and then no chunk is ever dropped.

Rollups (``readings_1m``, ``readings_1h``) outlive the raw rows: each is kept for ``minute_rollup_keep`` /
``hour_rollup_keep`` but never less than the longest raw retention, so a chart always has at least the rollup of what
the raw rows no longer hold (``None``: forever). The minute table is a hypertable on TimescaleDB (whole chunks
dropped); the hourly table, and both on plain PostgreSQL, are deleted in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool

from teleconsult.store.readings import flavour_of


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Keep readings of ``metrics`` for ``keep`` (``None``: forever)."""

    family: str
    metrics: frozenset[str]
    keep: timedelta | None


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Rules per metric family; metrics in no family follow ``default_keep``."""

    rules: Sequence[RetentionRule] = ()
    default_keep: timedelta | None = timedelta(days=5 * 365)
    dead_letters_keep: timedelta = timedelta(days=30)
    batch_rows: int = 50_000
    minute_rollup_keep: timedelta | None = timedelta(days=10 * 365)
    """``readings_1m`` (never less than the longest raw retention)."""
    hour_rollup_keep: timedelta | None = None
    """``readings_1h`` (never less than ``minute_rollup_keep``); ``None``: forever."""

    def rollup_keeps(self) -> tuple[timedelta | None, timedelta | None]:
        """Effective (minute, hour) rollup retention: each at least as long as what it summarizes."""
        raw = [r.keep for r in self.rules] + [self.default_keep]
        longest = None if any(k is None for k in raw) else max(k for k in raw if k is not None)
        minute = _longer(self.minute_rollup_keep, longest)
        return minute, _longer(self.hour_rollup_keep, minute)


def _longer(a: timedelta | None, b: timedelta | None) -> timedelta | None:
    return None if a is None or b is None else max(a, b)


#: Beat-to-beat series are bulky and only useful recently; vitals are clinical records.
DEFAULT_POLICY = RetentionPolicy(
    rules=(RetentionRule("beat_to_beat", frozenset({"rr_interval"}), timedelta(days=90)),),
)


@dataclass(slots=True)
class RetentionReport:
    """What one run removed."""

    dropped_chunks: int = 0
    deleted_rows: dict[str, int] = field(default_factory=dict)
    dead_letters_deleted: int = 0
    rollup_chunks_dropped: int = 0
    rollup_rows_deleted: dict[str, int] = field(default_factory=dict)


async def apply_retention(pool: AsyncConnectionPool[Any], policy: RetentionPolicy, now: datetime) -> RetentionReport:
    """Remove what ``policy`` no longer keeps as of ``now`` (timezone-aware)."""
    report = RetentionReport()
    keeps = [r.keep for r in policy.rules] + [policy.default_keep]
    longest = None if any(k is None for k in keeps) else max(k for k in keeps if k is not None)
    async with pool.connection() as conn:
        flavour = await flavour_of(conn)
        if flavour == "timescaledb" and longest is not None:
            cur = await conn.execute("select drop_chunks('readings', older_than => %s::timestamptz)", (now - longest,))
            report.dropped_chunks = len(await cur.fetchall())
            await conn.commit()
        covered: set[str] = set()
        for rule in policy.rules:
            covered |= rule.metrics
            if rule.keep is None or not rule.metrics:
                continue
            report.deleted_rows[rule.family] = await _delete(
                conn, metrics=sorted(rule.metrics), inside=True, cutoff=now - rule.keep, batch=policy.batch_rows
            )
        if policy.default_keep is not None and (flavour == "plain" or policy.default_keep != longest):
            report.deleted_rows["default"] = await _delete(
                conn, metrics=sorted(covered), inside=False, cutoff=now - policy.default_keep, batch=policy.batch_rows
            )
        await _rollups(conn, flavour, policy, now, report)
        cur = await conn.execute("delete from dead_letters where received_at < %s", (now - policy.dead_letters_keep,))
        report.dead_letters_deleted = max(cur.rowcount, 0)
        await conn.commit()
    return report


_DELETE_IN: Final = (
    # (reading_id, measured_at) is unique; ctid is not (it repeats across TimescaleDB chunks)
    "delete from readings where (reading_id, measured_at) in (select reading_id, measured_at from readings"
    " where measured_at < %s and metric = any(%s) limit %s)"
)
_DELETE_NOT_IN: Final = (
    "delete from readings where (reading_id, measured_at) in (select reading_id, measured_at from readings"
    " where measured_at < %s and not (metric = any(%s)) limit %s)"
)


async def _delete(conn: Any, *, metrics: list[str], inside: bool, cutoff: datetime, batch: int) -> int:
    total = 0
    while True:
        cur = await conn.execute(_DELETE_IN if inside else _DELETE_NOT_IN, (cutoff, metrics, batch))
        await conn.commit()
        n: int = max(cur.rowcount, 0)
        total += n
        if n < batch:
            return total


_DELETE_ROLLUP: Final = {
    table: f"delete from {table} where (patient_id, metric, bucket) in (select patient_id, metric, bucket"  # noqa: S608
    f" from {table} where bucket < %s limit %s)"
    for table in ("readings_1m", "readings_1h")
}


async def _rollups(conn: Any, flavour: str, policy: RetentionPolicy, now: datetime, report: RetentionReport) -> None:
    minute, hour = policy.rollup_keeps()
    for table, keep in (("readings_1m", minute), ("readings_1h", hour)):
        if keep is None:
            continue
        if flavour == "timescaledb" and table == "readings_1m":
            cur = await conn.execute("select drop_chunks('readings_1m', older_than => %s::timestamptz)", (now - keep,))
            report.rollup_chunks_dropped = len(await cur.fetchall())
            await conn.commit()
        total = 0
        while True:  # rows of chunks that straddle the cutoff, or the whole table on plain PostgreSQL
            cur = await conn.execute(_DELETE_ROLLUP[table], (now - keep, policy.batch_rows))
            await conn.commit()
            n: int = max(cur.rowcount, 0)
            total += n
            if n < policy.batch_rows:
                break
        report.rollup_rows_deleted[table] = total


async def retention_loop(
    pool: AsyncConnectionPool[Any], policy: RetentionPolicy = DEFAULT_POLICY, *, every: timedelta = timedelta(hours=1)
) -> None:
    """Apply ``policy`` now and then every ``every``, forever (the server runs it as a task and cancels it on stop).

    Errors are logged and retried at the next tick: retention must never take the server down.
    """
    import asyncio
    import logging

    log = logging.getLogger(__name__)
    while True:
        try:
            report = await apply_retention(pool, policy, datetime.now(UTC))
            log.info("retention: %s", report)
        except Exception:
            log.exception("retention run failed")
        await asyncio.sleep(every.total_seconds())
