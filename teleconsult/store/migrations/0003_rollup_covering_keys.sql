-- Chart queries on the rollups read (bucket, min, min_at, max, max_at) of one patient and metric over a range: make the
-- primary keys covering, so that PostgreSQL answers them with an index-only scan (a patient's minutes are spread over
-- many heap pages, interleaved with every other patient's) once VACUUM has marked the pages all-visible (autovacuum
-- does, PostgreSQL >= 13 also after inserts). Measured in docs/benchmarks/history.md.

-- tbib:common
alter table readings_1m drop constraint readings_1m_pkey;
alter table readings_1m add primary key (patient_id, metric, bucket) include (min, min_at, max, max_at);
alter table readings_1h drop constraint readings_1h_pkey;
alter table readings_1h add primary key (patient_id, metric, bucket) include (min, min_at, max, max_at, sum, count);

-- tbib:timescaledb
-- create_hypertable's default index on bucket alone serves no query here (retention drops whole chunks).
drop index if exists readings_1m_bucket_idx;
