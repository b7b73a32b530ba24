-- tbib e-prescriptions (issue 18): pharmacies and their pharmacist accounts, prescriber registration numbers, patient
-- allergies, signed prescriptions with their lines, dispenses. Rules: teleconsult/prescriptions/*.py, docs/prescriptions.md.

-- tbib:common
create table pharmacies (
    id uuid primary key default gen_random_uuid(),
    name text not null check (length(name) between 1 and 200),
    city text not null default '',
    address text not null default '',
    license_no text not null default '',
    created_at timestamptz not null default now()
);

-- A pharmacist account belongs to one pharmacy; a doctor prints their registration number (INPE) on ordonnances.
alter table users add column pharmacy_id uuid references pharmacies (id) on delete set null;
alter table users add column registration_number text;
alter table users add constraint users_pharmacy_role check (pharmacy_id is null or role = 'pharmacist');

-- Pharmacists are never on a care team: a stale or hand-made care_team row grants them nothing (they reach a
-- prescription only with its id and access code, through /api/v1/pharmacy).
create or replace function tbib_accessible_patients(p_user uuid, p_at timestamptz default now())
returns setof uuid language sql stable as $$
    select c.patient_id from care_team c join users u on u.id = c.clinician_id
     where c.clinician_id = p_user and not u.disabled and u.role not in ('patient', 'pharmacist')
       and c.valid_from <= p_at and (c.valid_to is null or c.valid_to > p_at)
    union
    select u.patient_id from users u where u.id = p_user and u.role = 'patient' and not u.disabled
$$;

-- The whole allergy list of a patient: [{"substance": "amoxicilline", "atc": "J01C", "note": ""}, ...].
create table patient_allergies (
    patient_id uuid primary key references patients (id) on delete cascade,
    allergies jsonb not null default '[]' check (jsonb_typeof(allergies) = 'array'),
    updated_at timestamptz not null default now(),
    updated_by uuid references users (id) on delete set null
);

-- Frozen at issue and signed (signature over the canonical JSON of these columns and the lines); later state:
-- cancellation, superseded_by, revision (number of dispenses) and prescription_lines.dispensed.
create table prescriptions (
    id uuid primary key,
    series_id uuid not null,
    version integer not null check (version >= 1),
    replaces uuid references prescriptions (id),
    superseded_by uuid references prescriptions (id),
    patient_id uuid not null references patients (id) on delete restrict,
    patient_name text not null,
    patient_birth_date date,
    prescriber_id uuid not null references users (id),
    prescriber_name text not null,
    prescriber_registration text,
    consultation_id uuid references consultations (id) on delete set null,
    issued_at timestamptz not null,
    valid_until timestamptz not null,
    note text not null default '',
    warnings jsonb not null default '[]',
    signature bytea not null,
    key_id text not null,
    code_digest bytea not null,                       -- HMAC-SHA256 of the access code (teleconsult/prescriptions/codes.py)
    code_sealed bytea not null,                       -- AES-GCM copy, shown again only to the patient and on the print
    cancelled_at timestamptz,
    cancelled_by uuid references users (id) on delete set null,
    cancel_reason text,
    revision integer not null default 0,
    unique (series_id, version)
);
create index prescriptions_patient on prescriptions (patient_id, issued_at desc);

create table prescription_lines (
    prescription_id uuid not null references prescriptions (id) on delete cascade,
    line_no smallint not null check (line_no between 1 and 20),
    formulary_id text,
    free_text boolean not null,
    medicine text not null,
    inn text,
    atc text,
    antibiotic boolean not null,
    dose double precision not null,
    dose_unit text not null,
    times_per_day integer not null,
    duration_days integer not null,
    quantity integer not null check (quantity >= 1),
    quantity_unit text not null,
    repeats integer not null check (repeats between 0 and 11),
    instructions text not null default '',
    substitution_allowed boolean not null,
    valid_until timestamptz not null,
    dispensed integer not null default 0,
    primary key (prescription_id, line_no),
    -- the last guard: the database itself refuses to count more than was prescribed
    constraint prescription_lines_not_over check (dispensed between 0 and quantity * (1 + repeats))
);

create table dispenses (
    id uuid primary key,
    prescription_id uuid not null references prescriptions (id) on delete cascade,
    pharmacy_id uuid not null references pharmacies (id),
    pharmacist_id uuid references users (id) on delete set null,
    at timestamptz not null
);
create index dispenses_prescription on dispenses (prescription_id, at);

create table dispense_lines (
    dispense_id uuid not null references dispenses (id) on delete cascade,
    line_no smallint not null,
    quantity integer not null check (quantity >= 1),
    batch text,
    dispensed_formulary_id text,
    dispensed_medicine text not null,
    substituted boolean not null,
    primary key (dispense_id, line_no)
);

-- Wrong access codes per pharmacist account (rate limit of /api/v1/pharmacy; each is also audited).
create table prescription_code_failures (
    id bigserial primary key,
    user_id uuid not null,
    client_addr text,
    at timestamptz not null default now()
);
create index prescription_code_failures_user_at on prescription_code_failures (user_id, at);
