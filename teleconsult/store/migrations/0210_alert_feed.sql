-- tbib alert feed (issue 15 item 2): every committed reading reaches the alert engine, in order, and a new engine
-- leader resumes where the last one stopped. See teleconsult/alerts/feed.py and docs/alerts.md.

-- tbib:common
-- One row per ingest transaction: the batch's COPY text rows (ingest.writer.write_batch), tagged with the writing
-- transaction's id. The engine reads "committed since snapshot S" as: txid not visible in S and visible now
-- (PgQ's tick technique): commit order, not a sequence, so a transaction that took a lower id but committed later is
-- never skipped, and no lock serializes the ingest workers.
create table reading_log (
    id bigserial primary key,
    txid xid8 not null default pg_current_xact_id(),
    created_at timestamptz not null default now(),
    data text not null
);
create index reading_log_txid on reading_log (txid);

-- The engine leader's position: the snapshot up to which every logged batch was processed. Written in the same
-- transaction as the alert events those readings produced (exactly once for alerts across a failover).
create table alert_engine_state (
    id boolean primary key default true check (id),
    snapshot pg_snapshot not null,
    updated_at timestamptz not null default now()
);

-- The occurrence an engine alert was raised for (the device time of the reading that raised it): a replay of
-- readings already processed does not raise it again.
alter table alerts add column occurrence text;
create unique index alerts_occurrence on alerts (patient_id, rule, occurrence) where occurrence is not null;

create function tbib_notify_reading_log() returns trigger language plpgsql as $$
begin
    perform pg_notify('tbib_reading_log', '');
    return null;
end
$$;

create trigger reading_log_notify after insert on reading_log
    for each statement execute function tbib_notify_reading_log();
