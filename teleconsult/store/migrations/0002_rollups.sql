-- Per-minute and hourly rollups of readings (issue 14), maintained by the ingest writer in the same transaction as the
-- raw rows (teleconsult/ingest/writer.py) and recomputed from raw rows by `tbib db rebuild-rollups`.
-- One row per (patient, metric, bucket): min and max with the time they were measured (so that a chart built from a
-- rollup places every peak at its exact time: the M4 guarantee), sum and count (mean = sum / count), first and last
-- measured_at. Buckets are date_bin(width, measured_at, 2000-01-03) in both flavours (time-zone independent, the same
-- origin as the history queries' time_bucket/date_bin). Rollups are kept longer than raw rows (retention.py).

-- tbib:common
create table readings_1m (
    patient_id uuid not null,
    metric text not null,
    bucket timestamptz not null,
    min double precision not null,
    min_at timestamptz not null,
    max double precision not null,
    max_at timestamptz not null,
    sum double precision not null,
    count bigint not null,
    first_at timestamptz not null,
    last_at timestamptz not null,
    primary key (patient_id, metric, bucket)
);

create table readings_1h (like readings_1m including all);

-- tbib:timescaledb
-- The minute table grows ~1 440 rows per patient-metric-day: a hypertable, so that retention drops whole chunks.
select create_hypertable('readings_1m', by_range('bucket', interval '7 days'), migrate_data => true);

-- tbib:common
-- Backfill from the raw rows already stored (a database upgraded from 0001 with data). Ties: the earliest time of
-- the minimum, the latest time of the maximum (the writer's merge and the rebuild use the same rule).
insert into readings_1m (patient_id, metric, bucket, min, min_at, max, max_at, sum, count, first_at, last_at)
select patient_id, metric, b, lo[1], to_timestamp(lo[2]), hi[1], to_timestamp(hi[2]), s, n, f, l
from (
    select patient_id, metric, date_bin('1 minute', measured_at, timestamptz '2000-01-03 00:00:00+00') as b,
           min(array[value, extract(epoch from measured_at)::float8]) as lo,
           max(array[value, extract(epoch from measured_at)::float8]) as hi,
           sum(value) as s, count(*) as n, min(measured_at) as f, max(measured_at) as l
    from readings group by 1, 2, 3
) x;

insert into readings_1h (patient_id, metric, bucket, min, min_at, max, max_at, sum, count, first_at, last_at)
select patient_id, metric, b, lo[1], to_timestamp(lo[2]), hi[1], to_timestamp(hi[2]), s, n, f, l
from (
    select patient_id, metric, date_bin('1 hour', bucket, timestamptz '2000-01-03 00:00:00+00') as b,
           min(array[min, extract(epoch from min_at)::float8]) as lo,
           max(array[max, extract(epoch from max_at)::float8]) as hi,
           sum(sum) as s, sum(count)::bigint as n, min(first_at) as f, max(last_at) as l
    from readings_1m group by 1, 2, 3
) x;
