-- tbib dashboard (issue 9): the clinicians' notes of a teleconsultation, one text per (consultation, author),
-- saved from the consultation view (PUT /api/v1/patients/{patient_id}/consultation-notes/{consultation_id}).

-- tbib:common
create table consultation_notes (
    consultation_id uuid not null references consultations (id) on delete cascade,
    author_id uuid not null references users (id),
    text text not null default '',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (consultation_id, author_id)
);
