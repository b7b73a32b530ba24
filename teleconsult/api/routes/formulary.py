"""The bundled formulary (issue 18): prefix search for the prescription form and the pharmacy's substitution.

Staff only (doctors, nurses, admins, pharmacists): a list of medicines is not patient data, but there is no reason to
serve it to anonymous callers. Source and licence: stated in the data file and in docs/prescriptions.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from teleconsult.api.deps import CurrentUser
from teleconsult.errors import AuthorizationError
from teleconsult.prescriptions.formulary import load
from teleconsult.security.models import Role

router = APIRouter(prefix="/formulary", tags=["prescriptions"])


@router.get("", summary="Search the formulary by name prefix or ATC code")
async def search_formulary(
    user: CurrentUser,
    q: Annotated[str, Query(max_length=100)] = "",
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> list[dict[str, Any]]:
    """Accent- and case-insensitive; every word of ``q`` must start a word of the product (or its ATC code)."""
    if user.role is Role.PATIENT:
        raise AuthorizationError("staff only")
    return [
        {"id": p.id, "inn": p.inn, "strength": p.strength, "form": p.form, "atc": p.atc, "antibiotic": p.antibiotic,
         "label": p.label}
        for p in load().search(q, limit)
    ]  # fmt: skip
