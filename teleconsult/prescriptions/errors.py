"""Errors of the prescriptions package (all under :class:`teleconsult.errors.TeleconsultError`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from teleconsult.errors import TeleconsultError

if TYPE_CHECKING:
    from teleconsult.prescriptions.model import Issue


class PrescriptionError(TeleconsultError):
    """Root of this package's errors."""


class InvalidPrescriptionError(PrescriptionError):
    """The prescription fails a blocking check (HTTP 422); ``issues`` are all the issues found."""

    def __init__(self, message: str, issues: tuple[Issue, ...]) -> None:
        super().__init__(message)
        self.message = message
        self.issues = issues


class PrescriptionConflictError(PrescriptionError):
    """The request conflicts with the prescription's state (HTTP 409); ``code`` is machine-readable."""

    def __init__(self, code: str, message: str, line_no: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.line_no = line_no


class InvalidDispenseError(PrescriptionError):
    """A dispense request names no such line, a line twice, or a wrong substitute (HTTP 422)."""

    def __init__(self, code: str, message: str, line_no: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.line_no = line_no


class SigningKeyError(PrescriptionError):
    """The signing key file is unreadable or not an Ed25519 private key."""


class FormularyError(PrescriptionError):
    """The bundled formulary file is malformed (a packaging bug)."""
