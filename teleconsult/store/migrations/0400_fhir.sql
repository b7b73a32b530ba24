-- tbib FHIR interface (issue 17): business identifiers of patients (national id / CIN, hospital MRNs), searched by
-- GET /fhir/r4/Patient?identifier=system|value. See teleconsult/fhir/ and docs/fhir.md.

-- tbib:common
create table patient_identifiers (
    patient_id uuid not null references patients (id) on delete cascade,
    system text not null,
    value text not null,
    created_at timestamptz not null default now(),
    primary key (system, value)
);
create index patient_identifiers_patient on patient_identifiers (patient_id);
