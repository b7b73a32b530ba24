-- Gateway provisioning from the admin UI (issue 19 item 6): one-time codes and device unenrolment.
--
-- An admin enrols a gateway for a patient; the server shows a one-time provisioning code (and a QR of it). The gateway
-- redeems it over HTTPS (POST /api/v1/gateways/provision) for its MQTT credential. Only sha256(code) is stored; a
-- code is short-lived (expires_at) and single use (used_at). Issuing a new code for a gateway voids its unused ones.
-- tbib:common
create table gateway_provisioning_codes (
    id uuid primary key default gen_random_uuid(),
    gateway_id text not null references gateways (id) on delete cascade,
    code_hash bytea not null unique,
    created_at timestamptz not null default now(),
    created_by uuid references users (id) on delete set null,
    expires_at timestamptz not null,
    used_at timestamptz,
    voided_at timestamptz,
    check (expires_at > created_at)
);
create index gateway_provisioning_codes_gateway on gateway_provisioning_codes (gateway_id);

-- An unenrolled device stays (its readings keep their device id) but no longer routes readings to a patient.
alter table devices add column unenrolled_at timestamptz;
