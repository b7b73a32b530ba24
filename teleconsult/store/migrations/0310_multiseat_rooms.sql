-- Multi-seat rooms (issue 19 item 3): up to four seats (doctor, patient and two guests: nurse, interpreter, family),
-- invitation links for guests without an account, and the signaling room state in the database so that any API node
-- serves any room (teleconsult/signaling/roomstore.py).
-- tbib:common
alter table consultation_events drop constraint if exists consultation_events_seat_check;
alter table consultation_events add constraint consultation_events_seat_check
    check (seat in ('doctor', 'patient', 'interpreter', 'nurse', 'family'));
alter table consultation_events drop constraint if exists consultation_events_role_check;
alter table consultation_events add constraint consultation_events_role_check
    check (role in ('doctor', 'patient', 'agent', 'interpreter', 'nurse', 'family'));

-- One row per invitation link. Only sha256(secret) is stored; the link works once (used_at), until expires_at, unless
-- the doctor revokes it (revoked_at). The guest's join token names the invitation (subject invite-<id>).
create table consultation_invites (
    id uuid primary key default gen_random_uuid(),
    consultation_id uuid not null references consultations (id) on delete cascade,
    role text not null check (role in ('nurse', 'interpreter', 'family')),
    name text not null check (length(name) between 1 and 80),
    secret_hash bytea not null unique,
    created_by uuid references users (id) on delete set null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    used_at timestamptz,
    revoked_at timestamptz,
    check (expires_at > created_at)
);
create index consultation_invites_consultation on consultation_invites (consultation_id, created_at);

-- The live state of a signaling room: seats (who, which connection, admitted or waiting, grace deadline) as JSON,
-- read and written under a row lock by the node that handles an input. Not a foreign key: the signaling-only server
-- (tests, benchmark) names rooms freely. An ended room keeps its row so that a still-valid token cannot reopen it.
create table signaling_rooms (
    consultation_id text primary key,
    state jsonb not null,
    next_timer timestamptz,
    ended_at timestamptz,
    updated_at timestamptz not null default now()
);
create index signaling_rooms_timer on signaling_rooms (next_timer) where next_timer is not null;
