"""Errors of the FHIR interface: one root, :class:`FhirError` (a :class:`~teleconsult.errors.TeleconsultError`).

"The client sent garbage" (:class:`InvalidResourceError`, :class:`InvalidSearchError`) is kept apart from "the
resource does not exist" (:class:`ResourceNotFoundError`). Each carries what an ``OperationOutcome`` issue needs: the
FHIR issue ``code`` and, when known, the ``expression`` (FHIRPath of the offending element). Only the API module turns
them into HTTP statuses (400, 404).
"""

from __future__ import annotations

from teleconsult.errors import TeleconsultError


class FhirError(TeleconsultError):
    """Root of every error of :mod:`teleconsult.fhir`; ``code`` is the OperationOutcome issue code."""

    code: str = "processing"

    def __init__(self, message: str, *, expression: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression


class InvalidResourceError(FhirError, ValueError):
    """A resource sent to the server is malformed or not acceptable (unknown code, wrong unit, bad time)."""

    code = "invalid"


class UnsupportedError(FhirError):
    """The request asks for something the server does not implement (resource type, interaction, bundle type)."""

    code = "not-supported"


class InvalidSearchError(FhirError, ValueError):
    """A search parameter is unknown or its value is malformed; ``param`` names it."""

    code = "invalid"

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message, expression=param)
        self.param = param


class ResourceNotFoundError(FhirError, LookupError):
    """``resource_type/resource_id`` does not exist (HTTP 404)."""

    code = "not-found"

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(f"{resource_type}/{resource_id} is not known")
        self.resource_type = resource_type
        self.resource_id = resource_id
