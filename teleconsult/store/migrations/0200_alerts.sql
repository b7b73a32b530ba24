-- tbib alerts schema (issue 7): alerts with their lifecycle, an append-only event log for replay, and the
-- notification of committed readings to the alert engine and the live vitals sockets.
-- See teleconsult/alerts/store.py and docs/alerts.md.

-- tbib:common
create table alerts (
    id bigserial primary key,
    patient_id uuid not null references patients (id) on delete cascade,
    rule text not null,
    severity text not null check (severity in ('low', 'medium', 'high')),
    state text not null check (state in ('open', 'acknowledged', 'resolved')),
    raised_at timestamptz not null,
    updated_at timestamptz not null,
    acked_by uuid references users (id) on delete set null,
    acked_at timestamptz,
    resolved_by uuid references users (id) on delete set null,
    resolved_at timestamptz,
    resolution text check (resolution in ('cleared', 'resolved')),  -- cleared by the engine, or by a clinician
    notes text not null default '',
    escalated_to uuid references users (id) on delete set null,
    escalated_at timestamptz,
    details jsonb not null default '{}'
);
-- Deduplication: at most one alert per (patient, rule) that is not resolved.
create unique index alerts_one_open on alerts (patient_id, rule) where state <> 'resolved';
create index alerts_patient_raised on alerts (patient_id, raised_at desc);

-- Event log for websocket replay. Writers hold pg_advisory_xact_lock(alert event lock) from before nextval until
-- commit, so ids become visible in increasing order: "id > last seen" never skips a late commit.
create table alert_events (
    id bigserial primary key,
    type text not null check (type in ('raised', 'updated', 'cleared', 'escalated', 'acknowledged', 'resolved', 'note')),
    alert_id bigint not null references alerts (id) on delete cascade,
    patient_id uuid not null,
    payload jsonb not null,
    created_at timestamptz not null default now()
);
create index alert_events_patient on alert_events (patient_id, id);

-- Per-patient alert configuration set by clinicians (teleconsult.alerts.store.profile_from_json):
-- {"spo2_scale": 2, "supplemental_oxygen": true, "heart_failure": true, "expected_intervals_s": {"body_weight": 86400}}
create table alert_profiles (
    patient_id uuid primary key references patients (id) on delete cascade,
    config jsonb not null default '{}',
    updated_at timestamptz not null default now()
);

-- Committed readings to listeners (alert engine leader, vitals sockets on every node), without touching the ingest
-- code path: latest_readings is written once per batch by ingest with the newest reading per (patient, metric).
-- Statement-level triggers with transition tables: one notification per ~40 rows, delivered at commit.
create function tbib_notify_readings() returns trigger language plpgsql as $$
declare
    chunk text;
begin
    for chunk in
        select json_agg(json_build_array(patient_id, metric, value, unit, measured_at, device_id))::text
          from (select r.*, (row_number() over () - 1) / 40 as grp from new_rows r) s
         group by grp
    loop
        perform pg_notify('tbib_readings', chunk);
    end loop;
    return null;
end
$$;

create trigger latest_readings_notify_insert after insert on latest_readings
    referencing new table as new_rows for each statement execute function tbib_notify_readings();
create trigger latest_readings_notify_update after update on latest_readings
    referencing new table as new_rows for each statement execute function tbib_notify_readings();
