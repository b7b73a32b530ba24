"""Per-minute (``readings_1m``) and hourly (``readings_1h``) rollups of ``readings`` (migration 0002).

Contract
- One row per (patient_id, metric, bucket): ``min``/``min_at``, ``max``/``max_at`` (the value and when it was measured;
  ties: the earliest minimum, the latest maximum), ``sum``, ``count``, ``first_at``/``last_at``. ``bucket`` is
  ``date_bin(width, measured_at, 2000-01-03)`` (time-zone independent, the history queries' origin).
- The ingest writer maintains both tables in the readings' own transaction, from the rows actually inserted (a
  duplicate reading never counts twice; a late reading merges into its old bucket): :func:`delta_sql`. The hourly table
  is merged from the same per-minute delta, so it always equals the rollup of the minute table.
- :func:`rebuild` recomputes both from raw rows, one time chunk per transaction (``tbib db rebuild-rollups``). Each
  chunk locks the two rollup tables (``EXCLUSIVE``: readers go on, ingest waits for that chunk's commit), so that a
  concurrent ingest batch is counted exactly once: either the rebuild's snapshot sees it or its delta lands after.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import AsyncConnection

Tier = Literal["1m", "1h"]
FloatArray = npt.NDArray[np.float64]
TIERS: Final[dict[Tier, tuple[str, timedelta]]] = {
    "1m": ("readings_1m", timedelta(minutes=1)),
    "1h": ("readings_1h", timedelta(hours=1)),
}
ORIGIN: Final = datetime(2000, 1, 3, tzinfo=UTC)
_ORIGIN_SQL: Final = "timestamptz '2000-01-03 00:00:00+00'"
_COLS: Final = "patient_id, metric, bucket, min, min_at, max, max_at, sum, count, first_at, last_at"
_MERGE: Final = (
    " on conflict (patient_id, metric, bucket) do update set"
    " min_at = case when excluded.min < t.min or (excluded.min = t.min and excluded.min_at < t.min_at)"
    " then excluded.min_at else t.min_at end,"
    " min = least(t.min, excluded.min),"
    " max_at = case when excluded.max > t.max or (excluded.max = t.max and excluded.max_at > t.max_at)"
    " then excluded.max_at else t.max_at end,"
    " max = greatest(t.max, excluded.max),"
    " sum = t.sum + excluded.sum, count = t.count + excluded.count,"
    " first_at = least(t.first_at, excluded.first_at), last_at = greatest(t.last_at, excluded.last_at)"
)


_UNPACK: Final = (
    "patient_id, metric, bucket, lo[1] as min, to_timestamp(lo[2]) as min_at, hi[1] as max,"
    " to_timestamp(hi[2]) as max_at, sum, count, first_at, last_at"
)


def minute_rows_sql(source: str, where: str = "") -> str:
    """Per-minute rollup rows (columns as the tables) of the raw rows of ``source``."""
    return (
        f"select {_UNPACK} from (select patient_id, metric,"  # noqa: S608 - constants
        f" date_bin('1 minute', measured_at, {_ORIGIN_SQL}) as bucket,"
        " min(array[value, extract(epoch from measured_at)::float8]) as lo,"
        " max(array[value, extract(epoch from measured_at)::float8]) as hi,"
        " sum(value) as sum, count(*)::bigint as count, min(measured_at) as first_at, max(measured_at) as last_at"
        f" from {source} {where} group by 1, 2, 3) x"
    )


def hour_rows_sql(source: str, where: str = "") -> str:
    """Hourly rollup rows of the per-minute rows of ``source``."""
    return (
        f"select {_UNPACK} from (select patient_id, metric,"  # noqa: S608 - constants
        f" date_bin('1 hour', bucket, {_ORIGIN_SQL}) as bucket,"
        " min(array[min, extract(epoch from min_at)::float8]) as lo,"
        " max(array[max, extract(epoch from max_at)::float8]) as hi,"
        " sum(sum) as sum, sum(count)::bigint as count, min(first_at) as first_at, max(last_at) as last_at"
        f" from {source} {where} group by 1, 2, 3) x"
    )


def merge_sql(minutes: str) -> str:
    """CTEs ``m1``, ``u1m``, ``u1h`` (append a final statement) merging the per-minute rows of query ``minutes``
    (columns as the tables, one row per key) into ``readings_1m`` and, grouped by hour, into ``readings_1h``.

    Rows are merged in key order, so that concurrent writers lock rollup rows in the same order (no deadlock).
    """
    return (
        f"m1 as ({minutes}),"  # noqa: S608 - constants
        f" u1m as (insert into readings_1m as t ({_COLS}) select {_COLS} from m1"
        f" order by patient_id, metric, bucket{_MERGE}),"
        f" u1h as (insert into readings_1h as t ({_COLS}) select {_COLS} from ({hour_rows_sql('m1')}) h"
        f" order by patient_id, metric, bucket{_MERGE})"
    )


def delta_sql(raw: str) -> str:
    """:func:`merge_sql` of the raw rows of CTE or relation ``raw`` (``patient_id, metric, value, measured_at``)."""
    return merge_sql(minute_rows_sql(raw))


#: The per-minute delta as parameters (the ingest worker aggregates each batch in Python, see
#: :func:`teleconsult.ingest.payload.copy_rows`): uuid[], text[], then float8[] epochs/values, int8[] counts.
PARAM_MINUTES: Final = (
    "select patient_id, metric, to_timestamp(b) as bucket, min, to_timestamp(min_t) as min_at, max,"
    " to_timestamp(max_t) as max_at, sum, count, to_timestamp(f) as first_at, to_timestamp(l) as last_at"
    " from unnest(%s::uuid[], %s::text[], %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::float8[],"
    " %s::float8[], %s::int8[], %s::float8[], %s::float8[])"
    " as x(patient_id, metric, b, min, min_t, max, max_t, sum, count, f, l)"
)


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What :func:`rebuild` did."""

    chunks: int
    minute_rows: int
    hour_rows: int
    start: datetime | None
    end: datetime | None


def floor_to(t: datetime, width: timedelta) -> datetime:
    """``t`` rounded down to a multiple of ``width`` from :data:`ORIGIN`."""
    return ORIGIN + ((t - ORIGIN) // width) * width


async def raw_extent(conn: AsyncConnection[Any], patient_id: Any = None) -> tuple[datetime, datetime] | None:
    """``(min, max)`` measured_at of the raw rows (of one patient), ``None`` when there are none."""
    if patient_id is None:
        cur = await conn.execute("select min(measured_at), max(measured_at) from readings")
    else:
        cur = await conn.execute(
            "select min(measured_at), max(measured_at) from readings where patient_id = %s", (patient_id,)
        )
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return None
    return row[0], row[1]


def _chunks(start: datetime, end: datetime, chunk: timedelta) -> list[tuple[datetime, datetime]]:
    if chunk < timedelta(hours=1) or chunk % timedelta(hours=1):
        raise ValueError("chunk must be a whole number of hours")
    hour = timedelta(hours=1)
    edges = [floor_to(start, hour)]
    hi = floor_to(end - timedelta(microseconds=1), hour) + hour
    while edges[-1] < hi:
        edges.append(min(edges[-1] + chunk, hi))
    return list(itertools.pairwise(edges))


def _chunk_statements(patient_id: Any) -> list[str]:
    """The statements that recompute one chunk ``[%(a)s, %(b)s)`` (of patient ``%(p)s``); run in one transaction."""
    who = "" if patient_id is None else " and patient_id = %(p)s"
    return [
        "lock table readings_1m, readings_1h in exclusive mode",
        f"delete from readings_1m where bucket >= %(a)s and bucket < %(b)s{who}",  # noqa: S608 - constants
        f"delete from readings_1h where bucket >= %(a)s and bucket < %(b)s{who}",  # noqa: S608
        f"insert into readings_1m ({_COLS}) "
        + minute_rows_sql("readings", f"where measured_at >= %(a)s and measured_at < %(b)s{who}")
        + " order by 1, 2, 3",  # one patient's minutes together on disk
        f"insert into readings_1h ({_COLS}) "
        + hour_rows_sql("readings_1m", f"where bucket >= %(a)s and bucket < %(b)s{who}"),
    ]


def rebuild_sync(
    conn: psycopg.Connection[Any],
    *,
    start: datetime,
    end: datetime,
    patient_id: Any = None,
    chunk: timedelta = timedelta(days=1),
) -> RebuildReport:
    """:func:`rebuild` of ``[start, end)`` on a synchronous autocommit connection (bulk loaders: demo, tests)."""
    minute_rows = hour_rows = 0
    chunks = _chunks(start, end, chunk)
    statements = _chunk_statements(patient_id)
    for a, b in chunks:
        with conn.transaction():
            for i, stmt in enumerate(statements):
                cur = conn.execute(stmt, {"a": a, "b": b, "p": patient_id})
                minute_rows += max(cur.rowcount, 0) if i == 3 else 0
                hour_rows += max(cur.rowcount, 0) if i == 4 else 0
    return RebuildReport(len(chunks), minute_rows, hour_rows, chunks[0][0], chunks[-1][1])


async def rebuild(
    conn: AsyncConnection[Any],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    patient_id: Any = None,
    chunk: timedelta = timedelta(days=1),
    progress: Callable[[int, int], None] | None = None,
) -> RebuildReport:
    """Recompute the rollups of ``[start, end)`` (default: every raw row) from raw rows, one ``chunk`` per transaction.

    Bounds are widened to whole hours. ``progress(done, total)`` is called after each chunk. ``conn`` must not be in
    a transaction (each chunk commits).
    """
    if start is None or end is None:
        extent = await raw_extent(conn, patient_id)
        await conn.commit()
        if extent is None:
            return RebuildReport(0, 0, 0, None, None)
        start = start or extent[0]
        end = end or extent[1] + timedelta(microseconds=1)
    chunks = _chunks(start, end, chunk)
    statements = _chunk_statements(patient_id)
    minute_rows = hour_rows = 0
    for done, (a, b) in enumerate(chunks, 1):
        async with conn.transaction():
            for i, stmt in enumerate(statements):
                cur = await conn.execute(stmt, {"a": a, "b": b, "p": patient_id})
                minute_rows += max(cur.rowcount, 0) if i == 3 else 0
                hour_rows += max(cur.rowcount, 0) if i == 4 else 0
        if progress is not None:
            progress(done, len(chunks))
    return RebuildReport(len(chunks), minute_rows, hour_rows, chunks[0][0], chunks[-1][1])


# --- chart queries -------------------------------------------------------------------------------------------------

_EXTREMES: Final = np.dtype([("b", ">i8"), ("lo", ">f8"), ("lo_t", ">i8"), ("hi", ">f8"), ("hi_t", ">i8")])
# One bytea of packed binary rows: a COPY would send one protocol message per row (43 200 for 30 days of minutes), a
# plain result one Python object per value; timestamptz travel as int64 microseconds since 2000-01-01 (extract(epoch)
# would cost a numeric per value).
_EXTREMES_SQL: Final = {
    tier: "select string_agg(timestamptz_send(bucket) || float8send(min) || timestamptz_send(min_at)"  # noqa: S608
    " || float8send(max) || timestamptz_send(max_at), ''::bytea) from (select bucket, min, min_at, max, max_at"
    f" from {table} where patient_id = %s and metric = %s and bucket >= %s and bucket < %s order by bucket) x"
    for tier, (table, _) in TIERS.items()
}
_PG_EPOCH_S: Final = 946_684_800.0


async def fetch_extremes(
    conn: AsyncConnection[Any], tier: Tier, patient_id: Any, metric: str, start: datetime, end: datetime
) -> dict[str, FloatArray]:
    """Columns ``b`` (bucket), ``lo``, ``lo_t``, ``hi``, ``hi_t`` (epoch seconds) of the rollup rows with ``start <=
    bucket < end``, in bucket order (an index-only scan of the covering primary key)."""
    async with conn.cursor(binary=True) as cur:
        await cur.execute(_EXTREMES_SQL[tier], (patient_id, metric, start, end))
        row = await cur.fetchone()
    rows = np.frombuffer(row[0] if row and row[0] else b"", dtype=_EXTREMES)
    out = {k: rows[k].astype(np.float64) for k in ("lo", "hi")}
    for k in ("b", "lo_t", "hi_t"):
        out[k] = rows[k] / 1e6 + _PG_EPOCH_S
    return out


def minmax_points(cols: dict[str, FloatArray], width_s: float) -> tuple[FloatArray, FloatArray]:
    """Pure: the minimum and the maximum of each pre-bucket of ``width_s`` seconds (from :data:`ORIGIN`) at the times
    they were measured (ties: earliest minimum, latest maximum), as one time-sorted series; a pre-bucket whose
    extremes are one reading gives one point."""
    b = cols["b"]
    if len(b) == 0:
        return np.empty(0), np.empty(0)
    g = np.floor((b - ORIGIN.timestamp()) / width_s).astype(np.int64)  # non-decreasing: rows come in bucket order
    starts = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
    counts = np.diff(np.append(starts, len(g)))
    lo, hi = cols["lo"], cols["hi"]
    lo_v = np.minimum.reduceat(lo, starts)
    hi_v = np.maximum.reduceat(hi, starts)
    lo_t = np.minimum.reduceat(np.where(lo == np.repeat(lo_v, counts), cols["lo_t"], np.inf), starts)
    hi_t = np.maximum.reduceat(np.where(hi == np.repeat(hi_v, counts), cols["hi_t"], -np.inf), starts)
    t = np.concatenate((lo_t, hi_t))
    v = np.concatenate((lo_v, hi_v))
    order = np.lexsort((v, t))
    t, v = t[order], v[order]
    keep = np.concatenate(([True], (t[1:] != t[:-1]) | (v[1:] != v[:-1])))
    return t[keep], v[keep]
