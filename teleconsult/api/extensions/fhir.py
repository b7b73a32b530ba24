"""The FHIR R4 interface at ``/fhir/r4`` (issue 17): see :mod:`teleconsult.fhir.api` and docs/fhir.md.

The prescription reads (issue 18, :mod:`teleconsult.fhir.medication_api`) come first: the main router ends with a
catch-all that answers 404 for anything it does not implement.
"""

from __future__ import annotations

from teleconsult.api.app import Extension
from teleconsult.fhir.api import PREFIX, router
from teleconsult.fhir.medication_api import router as medication_router

extension = Extension(name="fhir", routers=[(medication_router, PREFIX), (router, PREFIX)])
