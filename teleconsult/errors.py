"""Errors of the server: one root, :class:`TeleconsultError`.

"We misused it" (bad configuration) is kept apart from "the peer sent garbage" (a malformed signaling frame, a forged
token), as h11 separates local and remote protocol errors. Routes convert these to HTTP errors only in ``api/``.
"""

from __future__ import annotations


class TeleconsultError(Exception):
    """Root of every error raised by :mod:`teleconsult`."""


class SignalingError(TeleconsultError):
    """Teleconsultation signaling failed; ``code`` is the machine-readable error code sent in ``error`` frames."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class SignalingProtocolError(SignalingError):
    """The remote peer sent a frame that is too large, not JSON, or not a valid message of the protocol."""


class TokenError(SignalingError):
    """A consultation token is expired, forged, malformed, or scoped to another consultation or role."""


class StoreError(TeleconsultError):
    """The database layer failed (migrations, queries, retention)."""


class MigrationError(StoreError):
    """A schema migration could not be applied; ``name`` is the migration file (e.g. ``0001_core.sql``)."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class IngestError(TeleconsultError):
    """The ingest worker is misconfigured or cannot run (bad broker URL, settings)."""


class PayloadError(TeleconsultError, ValueError):
    """A gateway sent a reading batch that cannot be accepted; ``reason`` is the dead-letter reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AlertsError(TeleconsultError):
    """The alert engine, its store or its push channels failed or were misused."""


class InvalidObservationError(AlertsError, ValueError):
    """An observation given to NEWS2 or the engine is not a plausible value; ``field`` names it."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


# --- configuration, identity, access, audit and gateway credentials (issue 6) ------------------------------------


class ConfigError(TeleconsultError):
    """The server's configuration is unusable (e.g. a default secret outside development)."""


class SecurityError(TeleconsultError):
    """Root of authentication/authorization errors."""


class AuthenticationError(SecurityError):
    """No valid credentials (HTTP 401). ``reason`` is safe to show to the client."""

    def __init__(self, reason: str = "not authenticated") -> None:
        super().__init__(reason)
        self.reason = reason


class TotpRequiredError(AuthenticationError):
    """The password was right but the account needs a TOTP code (HTTP 401, detail ``totp_required``)."""

    def __init__(self) -> None:
        super().__init__("totp_required")


class LockedOutError(SecurityError):
    """Too many failed logins for the account or the client address (HTTP 429 with Retry-After)."""

    def __init__(self, retry_after_s: int, scope: str) -> None:
        super().__init__(f"too many failed logins ({scope}); retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s
        self.scope = scope


class AuthorizationError(SecurityError):
    """Authenticated but not allowed (HTTP 403). ``reason`` is safe to show to the client."""

    def __init__(self, reason: str = "forbidden") -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfError(AuthorizationError):
    """A cookie-authenticated state-changing request without the matching ``X-CSRF-Token`` header (HTTP 403)."""

    def __init__(self) -> None:
        super().__init__("missing or invalid X-CSRF-Token header")


class ConsentRequiredError(AuthorizationError):
    """The patient has not granted consent for ``purpose`` (HTTP 403)."""

    def __init__(self, patient_id: object, purpose: str) -> None:
        super().__init__(f"no consent for {purpose}")
        self.patient_id = patient_id
        self.purpose = purpose


class NotFoundError(TeleconsultError):
    """A named object does not exist (HTTP 404)."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"{kind} {key} not found")
        self.kind = kind
        self.key = key


class ConflictError(TeleconsultError):
    """The request conflicts with existing state, e.g. a duplicate username (HTTP 409)."""


class AuditChainError(TeleconsultError):
    """The audit hash chain is broken at row ``row_id``."""

    def __init__(self, row_id: int, reason: str) -> None:
        super().__init__(f"audit chain broken at row {row_id}: {reason}")
        self.row_id = row_id
        self.reason = reason


class EnrolmentError(TeleconsultError):
    """Gateway enrolment/revocation failed (bad gateway id, unknown gateway, broker files not writable)."""
