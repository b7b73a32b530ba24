"""Invitation links for guests without an account (nurse, interpreter, family): pure rules, no I/O, no clock.

The doctor of a consultation creates an invitation for a role and a name; the server keeps only ``sha256(secret)``
and gives the link ``/consult/guest#invite=<secret>`` once. Redeeming the secret (``check_redeem`` under a row lock,
then ``used_at`` is set in the same transaction) yields a short-lived join token whose subject is ``invite-<id>``; the
guest then waits in the room's lobby until the doctor admits or refuses them. A link works once, until it expires,
unless revoked; redeeming it again, late, or after the consultation ended is refused with a reason.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from teleconsult.errors import SignalingError
from teleconsult.signaling.tokens import GUEST_ROLES, MAX_NAME_CHARS, Role

DEFAULT_TTL: Final = timedelta(hours=2)
MAX_TTL: Final = timedelta(days=2)
SECRET_BYTES: Final = 32


class InviteError(SignalingError):
    """An invitation cannot be created or redeemed; ``code``: ``invite-unknown``, ``invite-used``,
    ``invite-expired``, ``invite-revoked``, ``ended``, ``bad-invite``."""


@dataclass(frozen=True, slots=True)
class Invite:
    """One invitation link (its secret is never kept)."""

    id: uuid.UUID
    consultation_id: uuid.UUID
    role: Role
    name: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def subject(self) -> str:
        """The join token's subject for this guest."""
        return f"invite-{self.id}"

    def status(self, now: datetime) -> str:
        """``pending``, ``used``, ``revoked`` or ``expired``."""
        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "pending"


def new_secret() -> tuple[str, bytes]:
    """A fresh link secret and the hash to store."""
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return secret, hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    """What the database keeps of a secret."""
    return hashlib.sha256(secret.encode()).digest()


def check_new(role: Role, name: str, ttl: timedelta) -> str:
    """Validate an invitation request; the cleaned name."""
    if role not in GUEST_ROLES:
        allowed = ", ".join(sorted(r.value for r in GUEST_ROLES))
        raise InviteError(f"an invitation is for a guest role ({allowed}), not {role.value}", code="bad-invite")
    clean = " ".join(name.split())
    if not clean or len(clean) > MAX_NAME_CHARS:
        raise InviteError(f"the guest's name must have 1 to {MAX_NAME_CHARS} characters", code="bad-invite")
    if not timedelta(minutes=5) <= ttl <= MAX_TTL:
        raise InviteError("an invitation lives between 5 minutes and 2 days", code="bad-invite")
    return clean


def check_redeem(invite: Invite | None, now: datetime, *, consultation_ended: bool) -> Invite:
    """The invitation, if it may be redeemed at ``now``; :class:`InviteError` with the reason otherwise."""
    if invite is None:
        raise InviteError("this invitation link is not valid", code="invite-unknown")
    if invite.used_at is not None:
        raise InviteError("this invitation link was already used: ask the doctor for a new one", code="invite-used")
    if invite.revoked_at is not None:
        raise InviteError("this invitation link was withdrawn by the doctor", code="invite-revoked")
    if now >= invite.expires_at:
        raise InviteError("this invitation link has expired: ask the doctor for a new one", code="invite-expired")
    if consultation_ended:
        raise InviteError("this consultation has ended", code="ended")
    return invite
