"""Domain values of the security package."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Role(StrEnum):
    """A user's role. Clinicians see a patient only while assigned to the patient's care team."""

    ADMIN = "admin"
    DOCTOR = "doctor"
    NURSE = "nurse"
    PATIENT = "patient"
    PHARMACIST = "pharmacist"


#: Roles that can be on a care team and read clinical data when assigned. Not pharmacists (issue 18): a pharmacist
#: sees a prescription only with its id and access code, and nothing else about the patient (docs/prescriptions.md).
CLINICIAN_ROLES: Final = frozenset({Role.DOCTOR, Role.NURSE})


class ConsentPurpose(StrEnum):
    """What a patient consents to (law 09-08: consent is per purpose)."""

    REMOTE_MONITORING = "remote_monitoring"
    TELECONSULTATION = "teleconsultation"
    DATA_SHARING = "data_sharing"


@dataclass(frozen=True, slots=True)
class User:
    """An authenticated account as the API sees it (no secrets)."""

    id: uuid.UUID
    username: str
    display_name: str
    role: Role
    patient_id: uuid.UUID | None = None
    """Set for (and only for) patient accounts: the patient record this account is."""
    disabled: bool = False
    totp_enabled: bool = False
    session_id: uuid.UUID | None = None
    """The login session the request came with (None outside a request)."""

    @property
    def is_clinician(self) -> bool:
        """True for doctors and nurses."""
        return self.role in CLINICIAN_ROLES


@dataclass(frozen=True, slots=True)
class PatientGrant:
    """Proof that ``user`` passed the care-team check for ``patient_id`` (returned by ``deps.PatientAccess``)."""

    user: User
    patient_id: uuid.UUID
    via: str
    """"care_team" (assigned clinician or admin) or "self" (the patient's own account)."""
