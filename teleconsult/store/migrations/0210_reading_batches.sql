-- tbib alert feed (issue 15 item 2): every committed reading reaches the alert engine, in time order, and a new
-- engine leader replays what was committed since the last processed position. See teleconsult/alerts/feed.py and
-- docs/alerts.md. Narrow on purpose (the reverted 0210_alert_feed logged each batch's rows a second time and halved
-- ingest under load): one ~40-byte row per writing transaction, no copy of the readings.

-- tbib:common
-- One row per transaction that inserted into readings: its id (commit order is recovered with snapshots, as PgQ
-- does: "not visible in the stored snapshot, visible now") and its now(), which is every one of its readings'
-- ingested_at default. The leader reads the readings of new batches by ingested_at (index below).
create table reading_batches (
    xid xid8 primary key,
    ingested_at timestamptz not null
);

create function tbib_reading_batch() returns trigger language plpgsql as $$
begin
    insert into reading_batches (xid, ingested_at) values (pg_current_xact_id(), now()) on conflict do nothing;
    perform pg_notify('tbib_reading_batches', '');  -- identical payloads of one transaction are delivered once
    return null;
end
$$;

create trigger readings_batch after insert on readings for each statement execute function tbib_reading_batch();

create index readings_ingested_at on readings (ingested_at);

-- The engine leader's position: the snapshot through which every batch was processed (its alert events stored).
create table alert_feed_position (
    id boolean primary key default true check (id),
    snapshot pg_snapshot not null,
    updated_at timestamptz not null default now()
);
