-- tbib security schema (issue 6): users, login sessions, login failures, care team, consents, audit log, gateway
-- broker credentials. See teleconsult/security/*.py for the rules these tables implement.

-- tbib:common
create table users (
    id uuid primary key default gen_random_uuid(),
    username text not null unique check (username ~ '^[a-z0-9][a-z0-9._@-]{0,63}$'),
    display_name text not null default '',
    role text not null check (role in ('admin', 'doctor', 'nurse', 'patient', 'pharmacist')),
    password_hash text not null,                      -- argon2id PHC string
    totp_secret text,                                 -- base32; used only when totp_enabled
    totp_enabled boolean not null default false,
    patient_id uuid references patients (id) on delete restrict,
    disabled boolean not null default false,
    failed_logins integer not null default 0,
    last_failed_at timestamptz,
    locked_until timestamptz,
    created_at timestamptz not null default now(),
    constraint users_patient_link check ((role = 'patient') = (patient_id is not null))
);

create table auth_sessions (
    id uuid primary key,
    user_id uuid not null references users (id) on delete cascade,
    refresh_hash bytea not null,                      -- sha256 of the refresh token's random part
    created_at timestamptz not null,
    last_used_at timestamptz not null,
    expires_at timestamptz not null,
    revoked_at timestamptz,
    client_addr text,
    user_agent text
);
create index auth_sessions_user on auth_sessions (user_id) where revoked_at is null;

create table login_failures (
    id bigserial primary key,
    client_addr text,
    username text not null,
    at timestamptz not null
);
create index login_failures_addr_at on login_failures (client_addr, at);

-- Care team: a clinician (or an admin, who otherwise sees no clinical data) may see a patient on [valid_from, valid_to).
create table care_team (
    id uuid primary key default gen_random_uuid(),
    clinician_id uuid not null references users (id) on delete cascade,
    patient_id uuid not null references patients (id) on delete cascade,
    valid_from timestamptz not null default now(),
    valid_to timestamptz,
    created_by uuid references users (id) on delete set null,
    created_at timestamptz not null default now(),
    check (valid_to is null or valid_to > valid_from)
);
create index care_team_clinician on care_team (clinician_id, patient_id);
create index care_team_patient on care_team (patient_id);

-- The same rule as teleconsult.security.care_team.access_via, for list queries:
--   ... where r.patient_id in (select tbib_accessible_patients(%(user_id)s))
create function tbib_accessible_patients(p_user uuid, p_at timestamptz default now())
returns setof uuid language sql stable as $$
    select c.patient_id from care_team c join users u on u.id = c.clinician_id
     where c.clinician_id = p_user and not u.disabled and u.role <> 'patient'
       and c.valid_from <= p_at and (c.valid_to is null or c.valid_to > p_at)
    union
    select u.patient_id from users u where u.id = p_user and u.role = 'patient' and not u.disabled
$$;

create function tbib_can_access(p_user uuid, p_patient uuid, p_at timestamptz default now())
returns boolean language sql stable as $$
    select exists (select 1 from tbib_accessible_patients(p_user, p_at) as p(id) where p.id = p_patient)
$$;

-- Consent per patient and purpose; the newest row per (patient, purpose) is in force.
create table consents (
    id bigserial primary key,
    patient_id uuid not null references patients (id) on delete cascade,
    purpose text not null check (purpose in ('remote_monitoring', 'teleconsultation', 'data_sharing')),
    granted boolean not null,
    recorded_by uuid references users (id) on delete set null,
    recorded_at timestamptz not null default now(),
    note text not null default ''
);
create index consents_patient_purpose on consents (patient_id, purpose, recorded_at desc, id desc);

create function tbib_has_consent(p_patient uuid, p_purpose text)
returns boolean language sql stable as $$
    select coalesce((select granted from consents where patient_id = p_patient and purpose = p_purpose
                      order by recorded_at desc, id desc limit 1), false)
$$;

-- Audit log: append-only and hash-chained (teleconsult/security/audit.py computes the hashes; ids are gapless).
-- No foreign keys: the log outlives users and patients and records attempts on ids that do not exist.
create table audit_events (
    id bigint primary key,
    occurred_at timestamptz not null,
    actor_id uuid,
    actor_username text,
    actor_role text,
    action text not null,
    patient_id uuid,
    resource text not null,
    outcome text not null,
    client_addr text,
    detail jsonb not null default '{}',
    prev_hash bytea not null,
    hash bytea not null
);
create index audit_events_patient on audit_events (patient_id, id desc);

create table audit_chain_head (
    singleton boolean primary key default true check (singleton),
    last_id bigint not null,
    last_hash bytea not null
);
insert into audit_chain_head (singleton, last_id, last_hash) values (true, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

create function tbib_audit_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'audit log is append-only: % on % refused', tg_op, tg_table_name
        using errcode = 'insufficient_privilege';
end
$$;
create trigger audit_events_append_only before update or delete on audit_events
    for each row execute function tbib_audit_append_only();
create trigger audit_events_no_truncate before truncate on audit_events
    for each statement execute function tbib_audit_append_only();
create trigger audit_chain_head_no_delete before delete on audit_chain_head
    for each row execute function tbib_audit_append_only();
create trigger audit_chain_head_no_truncate before truncate on audit_chain_head
    for each statement execute function tbib_audit_append_only();

-- Gateway broker credentials: the Mosquitto PBKDF2-SHA512 hash ($7$...) of the gateway's secret.
create table gateway_credentials (
    gateway_id text primary key references gateways (id) on delete cascade
        check (gateway_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    secret_hash text not null,
    created_at timestamptz not null default now(),
    created_by text,
    revoked_at timestamptz
);

-- Service accounts on the broker (ingest workers, the server's command publisher).
create table broker_service_accounts (
    username text primary key check (username ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    secret_hash text not null,
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);
