"""Shared pieces of the prescription routes (issue 18): keys, bodies, error translation, prescription-scoped access.

Not a router module (leading underscore): ``prescriptions.py``, ``pharmacy.py``, ``allergies.py``, ``formulary.py`` and
``pharmacies.py`` use it. Errors of :mod:`teleconsult.prescriptions` become ``{"detail": {"code", "message", ...}}``
409/422 answers here (docs/prescriptions.md, "Error shapes").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from fastapi import HTTPException, Request
from pydantic import Field

from teleconsult.api.deps import DbPool, authorize_patient, client_addr, route_template
from teleconsult.api.schemas import ApiModel, SafeText
from teleconsult.errors import NotFoundError
from teleconsult.prescriptions import service, store
from teleconsult.prescriptions.errors import InvalidDispenseError, InvalidPrescriptionError, PrescriptionConflictError
from teleconsult.prescriptions.model import LineDraft
from teleconsult.prescriptions.signing import Signer, default_key_path
from teleconsult.prescriptions.views import issue_json
from teleconsult.security import audit as audit_log
from teleconsult.security.models import PatientGrant, User


def keys(request: Request) -> service.Keys:
    """The app's signing key (loaded or created on first use: ``[ext.prescriptions] signing_key_file``)."""
    found: service.Keys | None = getattr(request.app.state, "prescription_keys", None)
    if found is None:
        settings = request.app.state.settings
        configured = settings.ext.get("prescriptions", {}).get("signing_key_file")
        signer = Signer.load_or_create(Path(configured) if configured else default_key_path())
        found = service.Keys(signer=signer, secret=settings.secret_key.get_secret_value())
        request.app.state.prescription_keys = found
    return found


def base_url(request: Request) -> str:
    """Where the QR's link points (the server as the client reached it)."""
    return str(request.base_url).rstrip("/")


@contextmanager
def rx_errors() -> Iterator[None]:
    """Translate the package's errors to 409/422 with a ``{"code", "message"}`` detail."""
    try:
        yield
    except PrescriptionConflictError as exc:
        raise HTTPException(409, {"code": exc.code, "message": exc.message, "line_no": exc.line_no}) from exc
    except InvalidDispenseError as exc:
        raise HTTPException(422, {"code": exc.code, "message": exc.message, "line_no": exc.line_no}) from exc
    except InvalidPrescriptionError as exc:
        detail = {"code": "prescription_invalid", "message": exc.message, "issues": [issue_json(i) for i in exc.issues]}
        raise HTTPException(422, detail) from exc


async def load_authorized(
    request: Request, pool: DbPool, user: User, prescription_id: uuid.UUID
) -> tuple[store.Stored, PatientGrant]:
    """The prescription (404) and the care-team check on its patient (403, audited)."""
    async with pool.connection() as conn:
        stored = await store.get(conn, prescription_id)
    if stored is None:
        raise NotFoundError("prescription", prescription_id)
    grant = await authorize_patient(
        pool,
        user,
        stored.rx.patient.id,
        action=audit_log.READ if request.method == "GET" else audit_log.WRITE,
        resource=route_template(request),
        client_addr=client_addr(request),
        detail={"prescription_id": str(prescription_id)},
    )
    return stored, grant


# --- bodies ---------------------------------------------------------------------------------------------------------

Unit = Annotated[SafeText, Field(min_length=1, max_length=40)]


class LineIn(ApiModel):
    """One line as written (a formulary product, or free text in ``medicine``)."""

    formulary_id: Annotated[str, Field(max_length=160)] | None = None
    medicine: Annotated[SafeText, Field(max_length=200)] | None = None
    dose: Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)]
    dose_unit: Unit
    times_per_day: Annotated[int, Field(ge=1, le=24)]
    duration_days: Annotated[int, Field(ge=1, le=365)]
    quantity: Annotated[int, Field(ge=0, le=1000)]
    quantity_unit: Unit = "boîte"
    repeats: Annotated[int, Field(ge=0, le=11)] = 0
    instructions: Annotated[SafeText, Field(max_length=500)] = ""
    substitution_allowed: bool = True

    def draft(self) -> LineDraft:
        """The domain value."""
        return LineDraft(
            formulary_id=self.formulary_id, medicine=self.medicine, dose=float(self.dose), dose_unit=self.dose_unit,
            times_per_day=self.times_per_day, duration_days=self.duration_days, quantity=self.quantity,
            quantity_unit=self.quantity_unit, repeats=self.repeats, instructions=self.instructions,
            substitution_allowed=self.substitution_allowed,
        )  # fmt: skip


class DraftIn(ApiModel):
    """A prescription as written (create, check, revise)."""

    lines: Annotated[list[LineIn], Field(max_length=20)]
    validity_days: Annotated[int, Field(ge=1, le=365)] | None = None
    note: Annotated[SafeText, Field(max_length=1000)] = ""
    consultation_id: uuid.UUID | None = None
    acknowledge_warnings: bool = False

    def draft(self) -> service.Draft:
        """The domain value."""
        return service.Draft(
            lines=[ln.draft() for ln in self.lines],
            validity_days=self.validity_days,
            note=self.note,
            consultation_id=self.consultation_id,
            acknowledge_warnings=self.acknowledge_warnings,
        )
