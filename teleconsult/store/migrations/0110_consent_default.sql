-- Consent: absence of a decision means no consent (issue 19 item 4). Until this migration, ingest and FHIR imports
-- treated a patient with no remote_monitoring decision on file as consenting. From now on every reader uses
-- tbib_has_consent(patient, purpose) (0100: false without a granting newest record).
--
-- Existing data, handled honestly (docs/security.md, "Consent"):
-- * a patient whose readings were being stored under the old default (an enrolled gateway or device, or any stored
--   reading) and who has no remote_monitoring decision gets ONE recorded decision, basis 'legacy', for
--   remote_monitoring only: the care that was already running goes on, and the record says it was not given
--   explicitly. The patient sees it as such in their space and can confirm or withdraw it.
-- * nothing else is invented: teleconsultation was already explicit-only (0100), and data_sharing is never presumed.
-- * patients with nothing processed get nothing: they consent (or not) at enrolment.
-- tbib:common
alter table consents add column basis text not null default 'explicit'
    check (basis in ('explicit', 'legacy'));
comment on column consents.basis is
    'explicit: a decision recorded by the patient or their care team; legacy: carried over by migration 0110 for '
    'patients already monitored when missing consent stopped counting as consent';

insert into consents (patient_id, purpose, granted, recorded_by, recorded_at, note, basis)
select p.id, 'remote_monitoring', true, null, now(),
       'legacy: monitored before consent was required explicitly (migration 0110); to be confirmed by the patient',
       'legacy'
  from patients p
 where not exists (select 1 from consents c where c.patient_id = p.id and c.purpose = 'remote_monitoring')
   and (exists (select 1 from gateways g where g.patient_id = p.id)
        or exists (select 1 from devices d where d.patient_id = p.id)
        or exists (select 1 from latest_readings l where l.patient_id = p.id));

