-- tbib core schema: patients, gateways, devices, readings, latest readings, dead letters.
-- Sections: "-- tbib:common" runs everywhere, "-- tbib:timescaledb" only when the database uses TimescaleDB,
-- "-- tbib:plain" only on plain PostgreSQL (see docs/storage.md).

-- tbib:common
create table patients (
    id uuid primary key default gen_random_uuid(),
    display_name text not null,
    birth_date date,
    sex text,
    created_at timestamptz not null default now()
);

create table gateways (
    id text primary key,
    patient_id uuid references patients (id) on delete set null,
    created_at timestamptz not null default now(),
    last_seen_at timestamptz
);

create table devices (
    id uuid primary key default gen_random_uuid(),
    gateway_id text not null references gateways (id) on delete cascade,
    patient_id uuid references patients (id) on delete set null,
    address text not null,
    model text,
    serial text,
    kind text,
    enrolled_at timestamptz not null default now(),
    unique (gateway_id, address)
);
create index devices_patient_id on devices (patient_id);

-- Contract (ARCHITECTURE.md): one row per reading; idempotency key (reading_id, measured_at).
-- No foreign keys: the ingest worker resolves patient and device from the enrolment; FKs would cost ingest throughput.
create table readings (
    patient_id uuid not null,
    device_id uuid,
    metric text not null,
    value double precision not null,
    unit text not null,
    measured_at timestamptz not null,
    received_at timestamptz,
    ingested_at timestamptz not null default now(),
    reading_id uuid not null,
    group_id uuid,
    flags jsonb
);

-- "Latest" is the newest measured_at, never the last received (upserts keep the newer measured_at).
create table latest_readings (
    patient_id uuid not null,
    metric text not null,
    value double precision not null,
    unit text not null,
    measured_at timestamptz not null,
    device_id uuid,
    reading_id uuid not null,
    updated_at timestamptz not null default now(),
    primary key (patient_id, metric)
);

create table dead_letters (
    id bigserial primary key,
    received_at timestamptz not null default now(),
    topic text not null,
    gateway_id text,
    reason text not null,
    payload bytea not null,
    payload_size integer not null
);
create index dead_letters_received_at on dead_letters (received_at);

-- tbib:timescaledb
-- No default time index: chunk exclusion covers time-range scans, and each index costs ingest throughput.
select create_hypertable('readings', by_range('measured_at', interval '1 day'), create_default_indexes => false);
create unique index readings_reading_id_measured_at on readings (reading_id, measured_at);
create index readings_patient_metric_time on readings (patient_id, metric, measured_at desc);

-- tbib:plain
create unique index readings_reading_id_measured_at on readings (reading_id, measured_at);
create index readings_patient_metric_time on readings (patient_id, metric, measured_at desc);
create index readings_measured_at_brin on readings using brin (measured_at);
