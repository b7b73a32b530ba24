"""The ``CapabilityStatement`` of ``/fhir/r4/metadata``: exactly what :mod:`teleconsult.fhir.api` implements (pure).

:data:`SEARCH_PARAMS` is also the source of truth for the API: a parameter not listed here answers 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from teleconsult.fhir.medication import MEDICATION_CAPABILITIES
from teleconsult.fhir.observation import fhir_instant
from teleconsult.fhir.terminology import FHIR_VERSION

#: resource type -> {search parameter: (type, documentation)}
SEARCH_PARAMS: Final[Mapping[str, Mapping[str, tuple[str, str]]]] = MappingProxyType(
    {
        "Observation": MappingProxyType(
            {
                "patient": ("reference", "Patient/<id> or <id> (required)"),
                "subject": ("reference", "same as patient"),
                "code": ("token", "[system|]code, comma-separated for OR: LOINC, MDC or tbib metric codes"),
                "date": ("date", "effective time; prefixes ge, gt, le, lt, eq (repeat for a range)"),
                "category": ("token", "vital-signs, laboratory, exam, activity"),
            }
        ),
        "AuditEvent": MappingProxyType(
            {
                "patient": ("reference", "Patient/<id> or <id> (required; admins only)"),
                "entity": ("reference", "same as patient"),
            }
        ),
        "Patient": MappingProxyType(
            {
                "identifier": ("token", "system|value (e.g. the CIN) or the tbib id urn:ietf:rfc:3986|urn:uuid:<id>"),
                "_id": ("token", "logical id"),
            }
        ),
    }
)
#: result parameters accepted on searches
RESULT_PARAMS: Final = {
    "_count": "page size, 1..1000 (default 100)",
    "_sort": "date or -date (default -date)",
    "_total": "accurate (default) or none",
}
MAX_COUNT: Final = 1000
DEFAULT_COUNT: Final = 100


def capability_statement(base: str, now: datetime, software_version: str) -> dict[str, Any]:
    """The server's CapabilityStatement (``kind = instance``)."""

    def params(rtype: str) -> list[dict[str, str]]:
        found = [{"name": n, "type": ty, "documentation": doc} for n, (ty, doc) in SEARCH_PARAMS[rtype].items()]
        return found + [
            {"name": n, "type": "number" if n == "_count" else "string", "documentation": d}
            for n, d in RESULT_PARAMS.items()
            if rtype == "Observation" or n != "_total"
        ]

    resources: list[dict[str, Any]] = [
        {
            "type": "Patient",
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": params("Patient"),
            "operation": [
                {
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                    "documentation": "start, end, _count; patient, devices, open alerts (Flag), then observations"
                    " (paged, oldest first; no total unless everything fits in one page)",
                }
            ],
        },
        {"type": "Device", "interaction": [{"code": "read"}]},
        {
            "type": "Observation",
            "profile": "http://hl7.org/fhir/StructureDefinition/Observation",
            "supportedProfile": [
                "http://hl7.org/fhir/StructureDefinition/vitalsigns",
                "http://hl7.org/fhir/StructureDefinition/bp",
            ],
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "conditionalCreate": True,
            "searchParam": params("Observation"),
        },
        {
            "type": "AuditEvent",
            "interaction": [{"code": "search-type"}],
            "searchParam": [
                {"name": n, "type": ty, "documentation": doc} for n, (ty, doc) in SEARCH_PARAMS["AuditEvent"].items()
            ]
            + [{"name": "_count", "type": "number", "documentation": RESULT_PARAMS["_count"]}],
            "documentation": "the audit trail of a patient's record, newest first (admins only)",
        },
        {"type": "Flag", "documentation": "open alerts, returned by Patient/$everything"},
        *MEDICATION_CAPABILITIES,
    ]
    return {
        "resourceType": "CapabilityStatement",
        "id": "tbib",
        "status": "active",
        "date": fhir_instant(now),
        "publisher": "tbib",
        "kind": "instance",
        "software": {"name": "tbib", "version": software_version},
        "implementation": {"description": "tbib FHIR R4 interface", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Bearer token of POST /api/v1/auth/login; care-team rules; every call audited. "
                "Gateways: HTTP Basic gateway_id:secret (broker credential), import only, own patients",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "OAuth",
                                }
                            ],
                            "text": "Bearer access token (JWT)",
                        },
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "Basic",
                                }
                            ],
                            "text": "Gateway broker credential (POST /fhir/r4 only)",
                        },
                    ]
                },
                "resource": resources,
                "interaction": [
                    {"code": "transaction", "documentation": "Observations (+ Devices) of one enrolled patient"},
                    {"code": "batch", "documentation": "same, each entry on its own"},
                ],
            }
        ],
    }
