"""Reading queries (async psycopg; callers pass an ``AsyncConnectionPool`` opened in the server's lifespan).

- :func:`latest_for_patient`: newest value per metric (``latest_readings``: max(measured_at), never last received).
- :func:`readings_between`: raw readings of one metric, oldest first.
- :func:`history`: one metric over a range, either min/avg/max per time bucket (``time_bucket`` on TimescaleDB,
  ``date_bin`` on plain PostgreSQL) or at most ``max_points`` points for a chart (LTTB, see :mod:`.lttb`).
- :func:`fetch_series`: raw ``(epoch seconds, value)`` numpy arrays through binary ``COPY`` (fast path for millions).

Large ranges are downsampled in two steps so that the database never ships millions of rows: PostgreSQL computes the
minimum and maximum of each of ``4 x max_points`` time buckets (an M4-style reduction that keeps every peak), then LTTB
picks ``max_points`` of those points, always keeping the range's minimum and maximum. Small ranges (<= ``4 x
max_points`` rows) use LTTB on the raw rows.

Source tier (``source="auto"``): the coarsest rollup (:mod:`.rollups`: ``readings_1h``, then ``readings_1m``) whose
bucket is no wider than ``range / max_points`` (one chart point), else the raw rows. A rollup row carries its min and
max with the time each was measured, so the pre-buckets' extremes, and their times, are exact on every tier.
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

from teleconsult.store.lttb import FloatArray, lttb_indices
from teleconsult.store.rollups import TIERS, Tier, fetch_extremes, floor_to, minmax_points

Flavour = Literal["timescaledb", "plain"]
Source = Literal["auto", "raw", "1m", "1h"]
Resolved = Literal["raw", "1m", "1h"]
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
    source: str = "raw"
    """Where the points come from: ``"raw"`` rows, the ``"1m"`` or the ``"1h"`` rollup."""
    bucket_s: float = 0.0
    """Pre-bucket width in seconds of ``minmax+lttb`` (a live chart merges new readings into buckets this wide)."""


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

_TIER_BUCKETS_SQL: Final[dict[Tier, str]] = {
    tier: "select date_bin(%(width)s::interval, bucket, %(origin)s::timestamptz) as b, min(min),"  # noqa: S608
    f" sum(sum) / sum(count), max(max), sum(count) from {table}"
    " where patient_id = %(p)s and metric = %(m)s and bucket >= %(s)s and bucket < %(e)s group by b order by b"
    for tier, (table, _) in TIERS.items()
}


def choose_source(span: timedelta, max_points: int) -> Resolved:
    """The coarsest tier whose bucket is no wider than one of ``max_points`` points over ``span``."""
    per_point = span / max_points
    tier: Tier
    for tier in ("1h", "1m"):
        if TIERS[tier][1] <= per_point:
            return tier
    return "raw"


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
    *,
    source: Source = "auto",
) -> History:
    """``metric`` of a patient over ``[start, end)``: buckets (``bucket``), a chart series (``max_points``), or raw.

    ``source`` forces a tier (``"raw"``, ``"1m"``, ``"1h"``); ``"auto"`` picks it (module docstring). Buckets come from
    a rollup only when the width and both bounds are whole multiples of its bucket.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    async with pool.connection() as conn:
        if bucket is not None:
            return await _buckets(conn, patient_id, metric, start, end, bucket, source)
        if max_points is None:
            t, v = await fetch_series(conn, patient_id, metric, start, end)
            return History(metric, start, end, [], _points(t, v), "raw")
        if max_points < 3:
            raise ValueError("max_points must be >= 3")
        pre = 4 * max_points
        tier = choose_source(end - start, max_points) if source == "auto" else source
        if tier != "raw":
            return await _tier_chart(conn, patient_id, metric, start, end, max_points, tier)
        flavour = await flavour_of(conn)
        width = max((end - start) / pre, timedelta(seconds=1))
        cur = await conn.execute(
            "select count(*) from (select 1 from readings where patient_id = %(p)s and metric = %(m)s"
            " and measured_at >= %(s)s and measured_at < %(e)s limit %(lim)s) x",
            {"p": patient_id, "m": metric, "s": start, "e": end, "lim": pre + 1},
        )
        row = await cur.fetchone()
        if row is not None and row[0] <= pre:
            t, v = await fetch_series(conn, patient_id, metric, start, end)
            t, v = downsample(t, v, max_points)
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
        t = np.clip(t, start.timestamp(), end.timestamp() - 1e-3)  # edge buckets straddle the bounds
        t, v = downsample(t, v, max_points)
        return History(metric, start, end, [], _points(t, v), "minmax+lttb", "raw", w)


async def _tier_chart(
    conn: AsyncConnection[Any],
    patient_id: uuid.UUID,
    metric: str,
    start: datetime,
    end: datetime,
    max_points: int,
    tier: Tier,
) -> History:
    """Chart series from a rollup: min and max (at their measured times) of pre-buckets, then LTTB."""
    tier_width = TIERS[tier][1]
    # pre-bucket: range / 4 max_points rounded up to whole tier buckets (every tier bucket falls in exactly one)
    width = max(-(-((end - start) / (4 * max_points)) // tier_width), 1) * tier_width
    cols = await fetch_extremes(conn, tier, patient_id, metric, floor_to(start, tier_width), end)
    t, v = minmax_points(cols, width.total_seconds())
    inside = (t >= start.timestamp()) & (t < end.timestamp())  # the first bucket may start before ``start``
    t, v = t[inside], v[inside]
    t, v = downsample(t, v, max_points)
    return History(metric, start, end, [], _points(t, v), "minmax+lttb", tier, width.total_seconds())


def downsample(t: FloatArray, v: FloatArray, n_out: int) -> tuple[FloatArray, FloatArray]:
    """LTTB to ``n_out`` points that always keeps the series' minimum and maximum (M4's guarantee for the extremes)."""
    idx = lttb_indices(t, v, n_out)
    if len(idx) >= len(t) or len(idx) < 4:
        return t[idx], v[idx]
    extremes = (int(np.argmax(v)), int(np.argmin(v)))
    for e in extremes:
        j = int(np.searchsorted(idx, e))  # idx[j - 1] < e <= idx[j]
        if idx[j] == e:
            continue
        # replace the nearer kept neighbour (never the first or last point, never the other extreme): stays sorted
        candidates = [k for k in (j - 1, j) if 1 <= k <= len(idx) - 2 and int(idx[k]) not in extremes]
        if candidates:
            idx[min(candidates, key=lambda k: abs(int(idx[k]) - e))] = e
    return t[idx], v[idx]


def _points(t: FloatArray, v: FloatArray) -> list[Point]:
    return [Point(datetime.fromtimestamp(float(ti), UTC), float(vi)) for ti, vi in zip(t, v, strict=True)]


async def _buckets(
    conn: AsyncConnection[Any],
    patient_id: uuid.UUID,
    metric: str,
    start: datetime,
    end: datetime,
    width: timedelta,
    source: Source,
) -> History:
    tier: Resolved = "raw" if source == "auto" else source
    if source == "auto":
        tier = "raw"
        name: Tier
        for name in ("1h", "1m"):
            w = TIERS[name][1]
            if not width % w and floor_to(start, w) == start and floor_to(end, w) == end:
                tier = name
                break
    args = {"p": patient_id, "m": metric, "s": start, "e": end, "width": width, "origin": _ORIGIN}
    if tier == "raw":
        cur = await conn.execute(_BUCKETS_SQL[await flavour_of(conn)], args)
    else:
        cur = await conn.execute(_TIER_BUCKETS_SQL[tier], args)
    buckets = [Bucket(b, float(lo), float(avg), float(hi), int(n)) for b, lo, avg, hi, n in await cur.fetchall()]
    return History(metric, start, end, buckets, [], "buckets", tier, width.total_seconds())
