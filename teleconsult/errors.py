"""Errors of the server: one root, :class:`TeleconsultError`.

"We misused it" (bad configuration) is kept apart from "the peer sent garbage" (a malformed signaling frame, a forged token),
as h11 separates local and remote protocol errors. Routes convert these to HTTP errors only in ``api/``.
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


# --- teleconsultation signaling (issue 8) --------------------------------------------------------------------------


class SignalingError(TeleconsultError):
    """Signaling failed; ``code`` is the machine-readable code sent in the ``error`` frame."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class SignalingProtocolError(SignalingError):
    """The remote peer sent a frame that is too large, not JSON, or not a valid message of the protocol."""


class TokenError(SignalingError):
    """A consultation join token is expired, forged, malformed, or not a signaling token."""
