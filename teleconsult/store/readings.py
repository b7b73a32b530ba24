"""Reading queries (async psycopg; callers pass an ``AsyncConnectionPool`` opened in the server's lifespan).

- :func:`latest_for_patient`: newest value per metric (``latest_readings``: max(measured_at), never last received).
- :func:`readings_between`: raw readings of one metric, oldest first.
- :func:`history`: one metric over a range, either min/avg/max per time bucket (``time_bucket`` on TimescaleDB,
  ``date_bin`` on plain PostgreSQL) or at most ``max_points`` points for a chart (LTTB, see :mod:`.lttb`).
- :func:`fetch_series`: raw ``(epoch seconds, value)`` numpy arrays through binary ``COPY`` (fast path for millions).

Large ranges are downsampled in two steps so that the database never ships millions of rows: PostgreSQL computes the
minimum and maximum of each of ``4 x max_points`` time buckets (an M4-style reduction that keeps every peak), then LTTB
picks ``max_points`` of those points. Small ranges (<= ``4 x max_points`` rows) use LTTB on the raw rows.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import numpy as np
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from teleconsult.store.lttb import FloatArray, lttb

Flavour = Literal["timescaledb", "plain"]
_ORIGIN: Final = datetime(2000, 1, 3, tzinfo=UTC)  # a Monday, as time_bucket's default origin
_BINARY_HEADER: Final = 19
_ROW: Final = np.dtype([("n", ">i2"), ("l1", ">i4"), ("t", ">f8"), ("l2", ">i4"), ("v", ">f8")])


@dataclass(frozen=True, slots=True)
class LatestReading:
    """The newest reading of one metric of a patient."""

    metric: str
    value: float
    unit: str
    measured_at: datetime
    device_id: uuid.UUID | None
    reading_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Reading:
    """One stored reading."""

    reading_id: uuid.UUID
    device_id: uuid.UUID | None
    metric: str
    value: float
    unit: str
    measured_at: datetime
    received_at: datetime | None
    group_id: uuid.UUID | None
    flags: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Bucket:
    """Aggregate of one time bucket starting at ``start``."""

    start: datetime
    min: float
    avg: float
    max: float
    count: int


@dataclass(frozen=True, slots=True)
class Point:
    """One chart point."""

    t: datetime
    value: float


@dataclass(frozen=True, slots=True)
class History:
    """Result of :func:`history`: ``buckets`` when a bucket width was asked, else ``points``."""

    metric: str
    start: datetime
    end: datetime
    buckets: list[Bucket]
    points: list[Point]
    method: str
    """``"buckets"``, ``"raw"``, ``"lttb"`` or ``"minmax+lttb"``."""


_flavours: dict[str, Flavour] = {}


async def flavour_of(conn: AsyncConnection[Any]) -> Flavour:
    """``timescaledb`` when ``readings`` is a hypertable, else ``plain`` (cached per database)."""
    key = conn.info.dsn
    cached = _flavours.get(key)
    if cached is not None:
        return cached
    cur = await conn.execute("select 1 from pg_extension where extname = 'timescaledb'")
    flavour: Flavour = "plain"
    if await cur.fetchone() is not None:
        cur = await conn.execute(
            "select 1 from _timescaledb_catalog.hypertable where table_name = 'readings' and schema_name = 'public'"
        )
        if await cur.fetchone() is not None:
            flavour = "timescaledb"
    _flavours[key] = flavour
    return flavour


_BUCKET_EXPR: Final[dict[Flavour, str]] = {
    "timescaledb": "time_bucket(%(width)s::interval, measured_at, %(origin)s::timestamptz)",
    "plain": "date_bin(%(width)s::interval, measured_at, %(origin)s::timestamptz)",
}
_RANGE: Final = "patient_id = %(p)s and metric = %(m)s and measured_at >= %(s)s and measured_at < %(e)s"
_BUCKETS_SQL: Final[dict[Flavour, str]] = {
    f: f"select {e} as b, min(value), avg(value), max(value), count(*) from readings"  # noqa: S608 - constants
    f" where {_RANGE} group by b order by b"
    for f, e in _BUCKET_EXPR.items()
}
_MINMAX_SQL: Final[dict[Flavour, str]] = {
    f: "select extract(epoch from b)::float8, lo, hi from ("  # noqa: S608 - constants
    f"select {e} as b, min(value) as lo, max(value) as hi from readings where {_RANGE} group by b) x"
    for f, e in _BUCKET_EXPR.items()
}


async def latest_for_patient(pool: AsyncConnectionPool[Any], patient_id: uuid.UUID) -> dict[str, LatestReading]:
    """Newest reading per metric for ``patient_id`` (by measured_at)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select metric, value, unit, measured_at, device_id, reading_id from latest_readings"
            " where patient_id = %s order by metric",
            (patient_id,),
        )
        return {r[0]: LatestReading(*r) for r in await cur.fetchall()}


async def readings_between(
    pool: AsyncConnectionPool[Any],
    patient_id: uuid.UUID,
    metric: str,
    start: datetime,
    end: datetime,
    *,
    limit: int = 100_000,
) -> list[Reading]:
    """Raw readings of ``metric`` with ``start <= measured_at < end``, oldest first (at most ``limit``)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select reading_id, device_id, metric, value, unit, measured_at, received_at, group_id, flags"
            " from readings where patient_id = %s and metric = %s and measured_at >= %s and measured_at < %s"
            " order by measured_at limit %s",
            (patient_id, metric, start, end, limit),
        )
        return [Reading(*r) for r in await cur.fetchall()]


async def fetch_series(
    conn: AsyncConnection[Any], patient_id: uuid.UUID, metric: str, start: datetime, end: datetime
) -> tuple[FloatArray, FloatArray]:
    """``(epoch seconds, values)`` sorted by time, through binary COPY straight into numpy (no Python row objects)."""
    buf = bytearray()
    query = (
        "copy (select extract(epoch from measured_at)::float8, value from readings"
        " where patient_id = {} and metric = {} and measured_at >= {} and measured_at < {}"
        " order by measured_at) to stdout (format binary)"
    )
    from psycopg import sql

    stmt = sql.SQL(query).format(sql.Literal(patient_id), sql.Literal(metric), sql.Literal(start), sql.Literal(end))
    async with conn.cursor() as cur, cur.copy(stmt) as copy:
        async for chunk in copy:
            buf += chunk
    if len(buf) < _BINARY_HEADER + 2:
        return np.empty(0), np.empty(0)
    (ext_len,) = struct.unpack_from(">I", buf, 15)
    body = memoryview(buf)[_BINARY_HEADER + ext_len : len(buf) - 2]
    rows = np.frombuffer(body, dtype=_ROW)
    return rows["t"].astype(np.float64), rows["v"].astype(np.float64)


async def history(
    pool: AsyncConnectionPool[Any],
    patient_id: uuid.UUID,
    metric: str,
    start: datetime,
    end: datetime,
    bucket: timedelta | None = None,
    max_points: int | None = None,
) -> History:
    """``metric`` of a patient over ``[start, end)``: buckets (``bucket``), a chart series (``max_points``), or raw."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    async with pool.connection() as conn:
        if bucket is not None:
            return History(
                metric, start, end, await _buckets(conn, patient_id, metric, start, end, bucket), [], "buckets"
            )
        if max_points is None:
            t, v = await fetch_series(conn, patient_id, metric, start, end)
            return History(metric, start, end, [], _points(t, v), "raw")
        if max_points < 3:
            raise ValueError("max_points must be >= 3")
        flavour = await flavour_of(conn)
        pre = 4 * max_points
        width = max((end - start) / pre, timedelta(seconds=1))
        cur = await conn.execute(
            "select count(*) from (select 1 from readings where patient_id = %(p)s and metric = %(m)s"
            " and measured_at >= %(s)s and measured_at < %(e)s limit %(lim)s) x",
            {"p": patient_id, "m": metric, "s": start, "e": end, "lim": pre + 1},
        )
        row = await cur.fetchone()
        if row is not None and row[0] <= pre:
            t, v = await fetch_series(conn, patient_id, metric, start, end)
            t, v = lttb(t, v, max_points)
            return History(metric, start, end, [], _points(t, v), "lttb")
        cur = await conn.execute(
            _MINMAX_SQL[flavour],
            {"p": patient_id, "m": metric, "s": start, "e": end, "width": width, "origin": _ORIGIN},
        )
        rows = sorted(await cur.fetchall())
        w = width.total_seconds()
        # min then max of each bucket, at a quarter and three quarters of it: a point's time resolution is the
        # pre-bucket width (range / 4 max_points), far below a chart pixel; the extremes themselves are exact.
        t = np.array([b + k * w for b, _, _ in rows for k in (0.25, 0.75)], dtype=np.float64)
        v = np.array([x for _, lo, hi in rows for x in (lo, hi)], dtype=np.float64)
        t, v = lttb(t, v, max_points)
        return History(metric, start, end, [], _points(t, v), "minmax+lttb")


def _points(t: FloatArray, v: FloatArray) -> list[Point]:
    return [Point(datetime.fromtimestamp(float(ti), UTC), float(vi)) for ti, vi in zip(t, v, strict=True)]


async def _buckets(
    conn: AsyncConnection[Any], patient_id: uuid.UUID, metric: str, start: datetime, end: datetime, width: timedelta
) -> list[Bucket]:
    flavour = await flavour_of(conn)
    cur = await conn.execute(
        _BUCKETS_SQL[flavour],
        {"p": patient_id, "m": metric, "s": start, "e": end, "width": width, "origin": _ORIGIN},
    )
    return [Bucket(b, float(lo), float(avg), float(hi), int(n)) for b, lo, avg, hi, n in await cur.fetchall()]
