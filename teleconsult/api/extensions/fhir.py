"""The FHIR R4 interface at ``/fhir/r4`` (issue 17): see :mod:`teleconsult.fhir.api` and docs/fhir.md."""

from __future__ import annotations

from teleconsult.api.app import Extension
from teleconsult.fhir.api import PREFIX, router

extension = Extension(name="fhir", routers=[(router, PREFIX)])
