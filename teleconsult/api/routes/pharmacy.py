"""The pharmacy side (issue 18): a pharmacist linked to a pharmacy looks a prescription up with its id + access code
and dispenses it.

A wrong code answers exactly like an unknown id (404), is audited (outcome denied, no patient) and counted: 10 wrong
codes within 15 minutes from one account -> 429 for the rest of that window. The pharmacy view shows the prescription
and the patient's name and birth date, nothing else about the patient. Every lookup and dispense is audited with the
patient id. A dispense locks the prescription row (see :func:`teleconsult.prescriptions.service.dispense`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import Field, model_validator

from teleconsult.api.deps import CurrentUser, DbPool, Pool, audit, client_addr, route_template
from teleconsult.api.routes._rx import keys, rx_errors
from teleconsult.api.schemas import ApiModel, SafeText
from teleconsult.errors import AuthorizationError
from teleconsult.prescriptions import codes, rules, service, store
from teleconsult.prescriptions.formulary import load as load_formulary
from teleconsult.prescriptions.model import Pharmacy
from teleconsult.prescriptions.views import dispense_json, pharmacy_json, prescription_json
from teleconsult.security import audit as audit_log
from teleconsult.security.models import Role, User

router = APIRouter(prefix="/pharmacy", tags=["pharmacy"])

FAILURE_WINDOW: Final = timedelta(minutes=15)
FAILURE_LIMIT: Final = 10
NOT_FOUND: Final = "no prescription with this id and access code"
DISPENSE: Final = "dispense"


def _now() -> datetime:
    return datetime.now(UTC)


async def current_pharmacy(user: CurrentUser, pool: Pool) -> tuple[User, Pharmacy]:
    """A pharmacist account and its pharmacy (403 otherwise)."""
    if user.role is not Role.PHARMACIST:
        raise AuthorizationError("requires role pharmacist")
    async with pool.connection() as conn:
        pharmacy = await store.pharmacy_of(conn, user.id)
    if pharmacy is None:
        raise AuthorizationError("this pharmacist account is not linked to a pharmacy")
    return user, pharmacy


CurrentPharmacy = Annotated[tuple[User, Pharmacy], Depends(current_pharmacy)]


async def _rate_limit(conn: store.Conn, user: User, now: datetime) -> None:
    """429 once the account made :data:`FAILURE_LIMIT` wrong codes within :data:`FAILURE_WINDOW`."""
    failures, oldest = await store.code_failures(conn, user.id, now - FAILURE_WINDOW)
    if failures >= FAILURE_LIMIT:
        retry = int(((oldest or now) + FAILURE_WINDOW - now).total_seconds()) + 1
        raise HTTPException(
            429, f"too many wrong access codes; retry in {retry} s", headers={"Retry-After": str(retry)}
        )


async def _refuse(request: Request, pool: DbPool, user: User, pharmacy: Pharmacy, prescription_id: uuid.UUID) -> None:
    """Audit a wrong code or unknown id (no patient named) and answer 404 (the failure is already counted)."""
    await audit(
        pool, user, action=audit_log.READ, resource=route_template(request), outcome=audit_log.DENIED,
        client_addr=client_addr(request),
        detail={"prescription_id": str(prescription_id), "reason": "unknown id or wrong access code",
                "pharmacy_id": str(pharmacy.id)},
    )  # fmt: skip
    raise HTTPException(404, NOT_FOUND)


async def _find(
    request: Request, pool: DbPool, user: User, pharmacy: Pharmacy, prescription_id: uuid.UUID, code: str
) -> store.Stored:
    """The prescription if the code is right; otherwise count, audit and answer 404 (429 past the limit)."""
    now = _now()
    async with pool.connection() as conn:
        await _rate_limit(conn, user, now)
        stored = await service.find_by_code(conn, keys(request), prescription_id, code)
        if stored is None:
            await store.add_code_failure(conn, user.id, client_addr(request), now)
    if stored is None:
        await _refuse(request, pool, user, pharmacy, prescription_id)
    assert stored is not None
    return stored


class LookupIn(ApiModel):
    """Id + code, or the scanned QR text."""

    prescription_id: uuid.UUID | None = None
    access_code: Annotated[str, Field(max_length=40)] | None = None
    qr: Annotated[str, Field(max_length=500)] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> LookupIn:
        if self.qr is None and (self.prescription_id is None or self.access_code is None):
            raise ValueError("give prescription_id and access_code, or qr")
        return self

    def target(self) -> tuple[uuid.UUID, str] | None:
        """``(id, code)``; None when the QR text is not one of ours."""
        if self.qr is not None:
            return codes.parse_qr(self.qr)
        assert self.prescription_id is not None
        assert self.access_code is not None
        return self.prescription_id, self.access_code


@router.get("/me", summary="My pharmacy")
async def me(current: CurrentPharmacy) -> dict[str, Any]:
    """The pharmacist's account and pharmacy."""
    user, pharmacy = current
    return {"user_id": str(user.id), "pharmacy": pharmacy_json(pharmacy, full=True)}


@router.post("/lookup", summary="Fetch a prescription with its id and access code")
async def lookup(request: Request, body: LookupIn, current: CurrentPharmacy, pool: Pool) -> dict[str, Any]:
    """The pharmacy view (404 for an unknown id or a wrong code alike)."""
    user, pharmacy = current
    target = body.target()
    if target is None:
        raise HTTPException(404, NOT_FOUND)
    stored = await _find(request, pool, user, pharmacy, *target)
    rx = stored.rx
    await audit(
        pool, user, action=audit_log.READ, resource=route_template(request), outcome=audit_log.ALLOWED,
        patient_id=rx.patient.id, client_addr=client_addr(request),
        detail={"prescription_id": str(rx.id), "pharmacy_id": str(pharmacy.id)},
    )  # fmt: skip
    async with pool.connection() as conn:
        ds = await store.dispenses(conn, prescription_ids=[rx.id])
    return prescription_json(rx, now=_now(), signer=keys(request).signer, dispenses=ds, pharmacy=True)


class DispenseLineIn(ApiModel):
    """What is handed over for one line."""

    line_no: Annotated[int, Field(ge=1, le=20)]
    quantity: Annotated[int, Field(ge=1, le=1000)]
    batch: Annotated[SafeText, Field(max_length=60)] | None = None
    substitute_formulary_id: Annotated[str, Field(max_length=160)] | None = None


class DispenseIn(ApiModel):
    """A dispense: all its lines succeed or none."""

    access_code: Annotated[str, Field(max_length=40)]
    expected_revision: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    lines: Annotated[list[DispenseLineIn], Field(min_length=1, max_length=20)]


@router.post(
    "/prescriptions/{prescription_id}/dispense",
    status_code=status.HTTP_201_CREATED,
    summary="Dispense all or part of the lines",
)
async def dispense(
    request: Request, prescription_id: uuid.UUID, body: DispenseIn, current: CurrentPharmacy, pool: Pool
) -> dict[str, Any]:
    """One fill at most per line; 409 when cancelled, expired, already dispensed, over the remaining, or stale."""
    user, pharmacy = current
    requests = [
        rules.DispenseRequest(ln.line_no, ln.quantity, ln.batch, ln.substitute_formulary_id) for ln in body.lines
    ]
    now = _now()
    detail: dict[str, Any] = {"prescription_id": str(prescription_id), "pharmacy_id": str(pharmacy.id)}
    k = keys(request)
    stored: store.Stored | None = None
    code = codes.normalize(body.access_code)
    try:
        with rx_errors():
            async with pool.connection() as conn:
                await _rate_limit(conn, user, now)
                async with conn.transaction():
                    # one transaction: the row lock, the code check, the rules and the write
                    stored = await store.get(conn, prescription_id, lock=True)
                    if stored is not None and (
                        code is None or not codes.matches(k.secret, prescription_id, code, stored.code_digest)
                    ):
                        stored = None
                    if stored is not None:
                        d, rx = await service.dispense_locked(
                            conn, k, load_formulary(), stored.rx, requests=requests, pharmacy=pharmacy,
                            pharmacist_id=user.id, now=now, expected_revision=body.expected_revision,
                        )  # fmt: skip
                        ds = await store.dispenses(conn, prescription_ids=[rx.id])
                if stored is None:
                    await store.add_code_failure(conn, user.id, client_addr(request), now)
    except HTTPException as exc:
        if stored is not None:
            refused = exc.detail.get("code") if isinstance(exc.detail, dict) else None
            await audit(
                pool, user, action=DISPENSE, resource=route_template(request), outcome=audit_log.DENIED,
                patient_id=stored.rx.patient.id, client_addr=client_addr(request), detail=detail | {"refused": refused},
            )  # fmt: skip
        raise
    if stored is None:
        await _refuse(request, pool, user, pharmacy, prescription_id)
    await audit(
        pool, user, action=DISPENSE, resource=route_template(request), outcome=audit_log.ALLOWED,
        patient_id=rx.patient.id, client_addr=client_addr(request),
        detail=detail | {"dispense_id": str(d.id), "lines": [[a.line_no, a.quantity] for a in d.lines]},
    )  # fmt: skip
    return {
        "dispense": dispense_json(d, rx),
        "prescription": prescription_json(rx, now=now, signer=k.signer, dispenses=ds, pharmacy=True),
    }
