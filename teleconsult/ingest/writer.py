"""Database side of ingest: one transaction per batch, idempotent.

Per batch, inside one transaction:
1. Fast path: ``COPY`` the rows straight into ``readings`` inside a savepoint. ``COPY`` is PostgreSQL's cheapest way in
   (multi-row inserts); it fails as a whole on the unique index ``(reading_id, measured_at)`` if any reading is already
   stored (a QoS 1 redelivery, a gateway resend).
2. Only then, idempotent path: roll back to the savepoint, ``COPY`` into the session temp table ``ingest_staging``
   (``ON COMMIT DELETE ROWS``) and ``INSERT INTO readings ... SELECT ... ON CONFLICT (reading_id, measured_at) DO
   NOTHING``: every reading is stored once, duplicates are counted.
3. Merge the rows actually inserted into the rollups ``readings_1m`` / ``readings_1h``
   (:mod:`teleconsult.store.rollups`): on the fast path from ``ingest_staging`` (the same rows, also copied there),
   on the idempotent path from the ``INSERT ... RETURNING`` rows, so that a duplicate never counts twice and a late
   reading updates its old bucket.
4. Upsert ``latest_readings`` from the batch's newest row per (patient, metric) (computed by the caller, sorted: a
   stable lock order across workers), keeping the newest ``measured_at``; insert the batch's dead letters; ``COMMIT``.
The caller acknowledges MQTT messages only after :func:`write_batch` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation

from teleconsult.ingest.payload import STAGING_COLUMNS, LatestRow, MinuteDelta
from teleconsult.store.rollups import PARAM_MINUTES, delta_sql, merge_sql

STAGING_DDL: Final = (
    "create temp table if not exists ingest_staging (patient_id uuid, device_id uuid, metric text,"
    " value double precision, unit text, measured_at timestamptz, received_at timestamptz, reading_id uuid,"
    " group_id uuid, flags jsonb) on commit delete rows"
)
_COLS: Final = ", ".join(STAGING_COLUMNS)
COPY_SQL: Final = f"copy ingest_staging ({_COLS}) from stdin"
INSERT_SQL: Final = (
    f"insert into readings ({_COLS}) select {_COLS} from ingest_staging"  # noqa: S608 - constant column names
    " on conflict (reading_id, measured_at) do nothing"
)
#: Idempotent insert and rollup merge of the rows inserted, in one statement; returns the inserted count.
INSERT_ROLLUP_SQL: Final = (
    f"with ins as ({INSERT_SQL} returning patient_id, metric, value, measured_at), {delta_sql('ins')}"  # noqa: S608
    " select count(*) from ins"
)
#: Rollup merge of the staging rows (fast path: every staged row was inserted).
STAGING_ROLLUP_SQL: Final = f"with {delta_sql('ingest_staging')} select 1"
#: Rollup merge of the caller's per-minute delta (fast path with the worker's aggregate: no second COPY).
MINUTES_ROLLUP_SQL: Final = f"with {merge_sql(PARAM_MINUTES)} select 1"
# distinct on + order by: one row per key (ON CONFLICT DO UPDATE cannot touch a row twice) and a stable lock order
# across concurrent workers (no deadlock).
DIRECT_COPY_SQL: Final = f"copy readings ({_COLS}) from stdin"
LATEST_VALUES_SQL: Final = (
    "insert into latest_readings (patient_id, metric, value, unit, measured_at, device_id, reading_id)"
    " select * from unnest(%s::uuid[], %s::text[], %s::float8[], %s::text[], %s::timestamptz[], %s::uuid[],"
    " %s::uuid[]) as t(patient_id, metric, value, unit, measured_at, device_id, reading_id)"
    " order by patient_id, metric"
    " on conflict (patient_id, metric) do update set value = excluded.value, unit = excluded.unit,"
    " measured_at = excluded.measured_at, device_id = excluded.device_id, reading_id = excluded.reading_id,"
    " updated_at = now()"
    " where excluded.measured_at > latest_readings.measured_at"
)
LATEST_SQL: Final = (
    "insert into latest_readings (patient_id, metric, value, unit, measured_at, device_id, reading_id)"
    " select distinct on (patient_id, metric) patient_id, metric, value, unit, measured_at, device_id, reading_id"
    " from ingest_staging order by patient_id, metric, measured_at desc, reading_id"
    " on conflict (patient_id, metric) do update set value = excluded.value, unit = excluded.unit,"
    " measured_at = excluded.measured_at, device_id = excluded.device_id, reading_id = excluded.reading_id,"
    " updated_at = now()"
    " where excluded.measured_at > latest_readings.measured_at"
)
DEAD_LETTER_SQL: Final = (
    "insert into dead_letters (topic, gateway_id, reason, payload, payload_size) values (%s, %s, %s, %s, %s)"
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message (or part of it) refused; ``payload`` may be truncated, ``size`` is the original size."""

    topic: str
    gateway_id: str | None
    reason: str
    payload: bytes
    size: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Counts of one committed batch."""

    staged: int
    inserted: int

    @property
    def duplicate(self) -> int:
        """Readings that were already stored."""
        return self.staged - self.inserted


async def prepare_connection(conn: AsyncConnection[Any]) -> None:
    """Create the session's staging table (call once per connection)."""
    await conn.execute(STAGING_DDL)
    await conn.commit()


async def write_batch(
    conn: AsyncConnection[Any],
    lines: list[str],
    dead: list[DeadLetter],
    latest: Sequence[LatestRow] | None = None,
    *,
    minutes: MinuteDelta | None = None,
    rollups: bool = True,
) -> WriteResult:
    """Store ``lines`` (COPY text rows) and ``dead`` letters in one transaction; idempotent.

    ``latest``: the newest row per (patient, metric) of the batch; ``None`` derives it in SQL from the staging table
    (always the idempotent path then). ``minutes``: the batch's per-minute rollup computed by the caller
    (:func:`teleconsult.ingest.payload.copy_rows`), merged as such when the fast path stores every row; otherwise the
    rows are aggregated in SQL. ``rollups=False`` skips the rollup merge (benchmarks measure its cost; the
    rollups are then stale until ``tbib db rebuild-rollups``).
    """
    inserted = 0
    data = "".join(lines).encode() if lines else b""
    async with conn.transaction():
        if lines:
            async with conn.cursor() as cur:
                direct = latest is not None
                if direct:
                    try:
                        async with conn.transaction(), cur.copy(DIRECT_COPY_SQL) as copy:
                            await copy.write(data)
                        inserted = len(lines)
                    except UniqueViolation:
                        direct = False
                if not direct or (rollups and minutes is None):
                    async with cur.copy(COPY_SQL) as copy:
                        await copy.write(data)
                if direct:
                    if rollups and minutes is not None:
                        await cur.execute(MINUTES_ROLLUP_SQL, _minute_params(minutes))
                    elif rollups:
                        await cur.execute(STAGING_ROLLUP_SQL)
                elif rollups:
                    await cur.execute(INSERT_ROLLUP_SQL)
                    row = await cur.fetchone()
                    inserted = int(row[0]) if row else 0
                else:
                    await cur.execute(INSERT_SQL)
                    inserted = max(cur.rowcount, 0)
                if latest is None:
                    await cur.execute(LATEST_SQL)
                elif latest:
                    rows = sorted(latest, key=lambda r: (str(r.patient_id), r.metric))
                    await cur.execute(LATEST_VALUES_SQL, [list(col) for col in zip(*rows, strict=True)])
        if dead:
            async with conn.cursor() as cur:
                await cur.executemany(
                    DEAD_LETTER_SQL, [(d.topic, d.gateway_id, d.reason, d.payload, d.size) for d in dead]
                )
    return WriteResult(len(lines), inserted)


def _minute_params(minutes: MinuteDelta) -> list[list[Any]]:
    """:data:`MINUTES_ROLLUP_SQL` parameters: one array per column."""
    cols: list[list[Any]] = [[] for _ in range(11)]
    for (pid, metric, minute), a in minutes.items():
        for col, x in zip(cols, (pid, metric, minute * 60.0, *a), strict=True):
            col.append(x)
    cols[8] = [int(n) for n in cols[8]]
    return cols
