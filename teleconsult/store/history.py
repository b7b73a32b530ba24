"""Reports over stored readings: daily summaries (pandas) and CSV export.

:func:`summarize_daily` is pure (arrays in, DataFrame out); :func:`daily_summary` fetches with binary COPY
(:func:`teleconsult.store.readings.fetch_series`) and calls it. "Time in range" is the share of readings inside the
target range, the usual definition for regularly sampled series (CGM time in range, SpO2 >= target).
"""

from __future__ import annotations

import io
import uuid
from datetime import datetime
from typing import Any, Final

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from teleconsult.store.lttb import FloatArray
from teleconsult.store.readings import fetch_series

SUMMARY_COLUMNS: Final = ("day", "count", "min", "mean", "max", "in_range_fraction")


def summarize_daily(
    t: FloatArray, v: FloatArray, *, tz: str = "UTC", target: tuple[float, float] | None = None
) -> pd.DataFrame:
    """One row per local calendar day in ``tz``: count, min, mean, max and (with ``target``) the in-range fraction."""
    if len(t) == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in SUMMARY_COLUMNS})
    times = pd.to_datetime(t, unit="s", utc=True).tz_convert(tz)
    frame = pd.DataFrame({"value": v}, index=times)
    if target is not None:
        lo, hi = target
        frame["in_range"] = ((v >= lo) & (v <= hi)).astype(np.float64)
    grouped = frame.groupby(frame.index.date)
    out = grouped["value"].agg(["count", "min", "mean", "max"])
    out["in_range_fraction"] = grouped["in_range"].mean() if target is not None else np.nan
    out.index.name = "day"
    return out.reset_index()[list(SUMMARY_COLUMNS)]


async def daily_summary(
    pool: AsyncConnectionPool[Any],
    patient_id: uuid.UUID,
    metric: str,
    start: datetime,
    end: datetime,
    *,
    tz: str = "UTC",
    target: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Daily min/mean/max (and time in ``target`` range) of ``metric`` over ``[start, end)``."""
    async with pool.connection() as conn:
        t, v = await fetch_series(conn, patient_id, metric, start, end)
    return summarize_daily(t, v, tz=tz, target=target)


async def readings_csv(
    pool: AsyncConnectionPool[Any],
    patient_id: uuid.UUID,
    start: datetime,
    end: datetime,
    *,
    metrics: list[str] | None = None,
) -> str:
    """Raw readings of a patient as CSV (header; measured_at ISO 8601 UTC), built by PostgreSQL's COPY."""
    cond = sql.SQL("patient_id = {} and measured_at >= {} and measured_at < {}").format(
        sql.Literal(patient_id), sql.Literal(start), sql.Literal(end)
    )
    if metrics:
        cond = sql.SQL("{} and metric = any({})").format(cond, sql.Literal(metrics))
    stmt = sql.SQL(
        "copy (select to_char(measured_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') as measured_at,"
        " metric, value, unit, reading_id, device_id, group_id, flags from readings where {}"
        " order by measured_at, metric) to stdout (format csv, header)"
    ).format(cond)
    out = io.BytesIO()
    async with pool.connection() as conn, conn.cursor() as cur, cur.copy(stmt) as copy:
        async for chunk in copy:
            out.write(chunk)
    return out.getvalue().decode()


def summary_csv(frame: pd.DataFrame) -> str:
    """A daily summary as CSV text."""
    text: str = frame.to_csv(index=False, float_format="%.6g")
    return text
