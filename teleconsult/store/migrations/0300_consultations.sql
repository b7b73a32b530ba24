-- tbib consultation record (issue 8): who was called, when it started and ended, who joined, who admitted whom.
-- No media is recorded. Rows of consultation_events come from the signaling room (teleconsult/signaling/record.py).

-- tbib:common
create table consultations (
    id uuid primary key default gen_random_uuid(),
    patient_id uuid not null references patients (id) on delete cascade,
    doctor_id uuid not null references users (id),
    created_by uuid references users (id) on delete set null,
    created_at timestamptz not null default now(),
    scheduled_for timestamptz,
    started_at timestamptz,
    ended_at timestamptz,
    reason text not null default ''
);
create index consultations_patient on consultations (patient_id, created_at desc);
create index consultations_doctor on consultations (doctor_id, created_at desc);

create table consultation_events (
    id bigserial primary key,
    consultation_id uuid not null references consultations (id) on delete cascade,
    kind text not null check (kind in ('started', 'waiting', 'joined', 'admitted', 'denied', 'left', 'ended')),
    at timestamptz not null,
    seat text check (seat in ('doctor', 'patient', 'interpreter')),
    role text check (role in ('doctor', 'patient', 'agent', 'interpreter')),
    subject text,
    by_subject text,
    reason text
);
create index consultation_events_consultation on consultation_events (consultation_id, at, id);
