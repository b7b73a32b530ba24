"""Prescriptions on the care-team side (issue 18): check, issue, list, read, cancel, revise, print, access code.

Patient-scoped routes depend on ``PatientAccess``; prescription-scoped ones load the prescription (404) and run the same
care-team check on its patient (403, audited). Writing, cancelling and revising: doctors on the care team. The access
code, the QR and the printable ordonnance: the prescriber (still on the care team) and the patient themself only.
See docs/prescriptions.md ("HTTP API").
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response
from pydantic import Field

from teleconsult.api.deps import CurrentUser, PatientAccess, Pool
from teleconsult.api.routes._rx import DraftIn, base_url, keys, load_authorized, rx_errors
from teleconsult.api.schemas import ApiModel, SafeText
from teleconsult.errors import AuthorizationError
from teleconsult.prescriptions import codes, printing, rules, service, store
from teleconsult.prescriptions.formulary import load as load_formulary
from teleconsult.prescriptions.model import Status
from teleconsult.prescriptions.views import dispense_json, issue_json, prescription_json
from teleconsult.security.models import PatientGrant, Role, User

router = APIRouter(tags=["prescriptions"])


def _now() -> datetime:
    return datetime.now(UTC)


def _doctor(user: User) -> None:
    if user.role is not Role.DOCTOR:
        raise AuthorizationError("only a doctor can write, cancel or revise a prescription")


def _prescriber_or_patient(grant: PatientGrant, stored: store.Stored) -> None:
    user = grant.user
    if grant.via == "self":
        return
    if user.role is Role.DOCTOR and user.id == stored.rx.prescriber.id:
        return
    raise AuthorizationError("only the prescriber and the patient may see the access code")


async def _json(request: Request, pool: Any, stored_rx: Any, now: datetime) -> dict[str, Any]:
    async with pool.connection() as conn:
        ds = await store.dispenses(conn, prescription_ids=[stored_rx.id])
    return prescription_json(stored_rx, now=now, signer=keys(request).signer, dispenses=ds)


@router.post("/patients/{patient_id}/prescriptions/check", summary="Check a draft prescription (nothing stored)")
async def check_prescription(access: PatientAccess, pool: Pool, body: DraftIn) -> dict[str, Any]:
    """All issues (errors, warnings, infos) and the validity dates the prescription would get."""
    _doctor(access.user)
    async with pool.connection() as conn:
        result = await service.check(
            conn, load_formulary(), patient_id=access.patient_id, prescriber_id=access.user.id, draft=body.draft(),
            now=_now(),
        )  # fmt: skip
    return {
        "issues": [issue_json(i) for i in result.issues],
        "valid_until": result.valid_until.isoformat(),
        "lines": [{"line_no": ln.line_no, "valid_until": ln.valid_until.isoformat()} for ln in result.lines],
    }


@router.post(
    "/patients/{patient_id}/prescriptions", status_code=status.HTTP_201_CREATED, summary="Issue a signed prescription"
)
async def create_prescription(request: Request, access: PatientAccess, pool: Pool, body: DraftIn) -> dict[str, Any]:
    """Frozen and signed on issue; the answer carries the access code (printed; the patient can get it again)."""
    _doctor(access.user)
    now = _now()
    with rx_errors():
        async with pool.connection() as conn, conn.transaction():
            rx, code = await service.issue(
                conn, keys(request), load_formulary(), patient_id=access.patient_id, prescriber_id=access.user.id,
                draft=body.draft(), now=now,
            )  # fmt: skip
    out = prescription_json(rx, now=now, signer=keys(request).signer, dispenses=[])
    return out | {"access_code": codes.display(code)}


@router.get("/patients/{patient_id}/prescriptions", summary="A patient's prescriptions, newest first")
async def list_prescriptions(
    request: Request,
    access: PatientAccess,
    pool: Pool,
    status_filter: Annotated[str | None, Query(alias="status", max_length=200)] = None,
) -> list[dict[str, Any]]:
    """With status, remaining quantities and dispenses (no access code)."""
    wanted = {s.strip() for s in status_filter.split(",") if s.strip()} if status_filter else None
    now = _now()
    async with pool.connection() as conn:
        rxs = await store.list_for_patient(conn, access.patient_id)
        ds = await store.dispenses(conn, prescription_ids=[r.id for r in rxs]) if rxs else []
    signer = keys(request).signer
    out = []
    for rx in rxs:
        if wanted is not None and rules.status(rx, now).value not in wanted:
            continue
        mine = [d for d in ds if d.prescription_id == rx.id]
        out.append(prescription_json(rx, now=now, signer=signer, dispenses=mine))
    return out


@router.get("/patients/{patient_id}/dispenses", summary="Dispense events of a patient (adherence), newest first")
async def list_dispenses(access: PatientAccess, pool: Pool) -> list[dict[str, Any]]:
    """Each with its pharmacy and lines (prescribed and handed-over medicine)."""
    async with pool.connection() as conn:
        ds = await store.dispenses(conn, patient_id=access.patient_id, limit=200)
        rxs = {rx.id: rx for rx in await store.list_for_patient(conn, access.patient_id, limit=1000)}
    return [dispense_json(d, rxs.get(d.prescription_id)) for d in ds]


@router.get("/prescriptions/{prescription_id}", summary="One prescription")
async def get_prescription(
    request: Request, prescription_id: uuid.UUID, user: CurrentUser, pool: Pool
) -> dict[str, Any]:
    """Care team or the patient; the signature is verified again from the stored record."""
    stored, _ = await load_authorized(request, pool, user, prescription_id)
    return await _json(request, pool, stored.rx, _now())


class CancelIn(ApiModel):
    """Why."""

    reason: Annotated[SafeText, Field(min_length=1, max_length=500)]


@router.post("/prescriptions/{prescription_id}/cancel", summary="Cancel a prescription (doctor on the care team)")
async def cancel_prescription(
    request: Request, prescription_id: uuid.UUID, body: CancelIn, user: CurrentUser, pool: Pool
) -> dict[str, Any]:
    """What is left can no longer be dispensed; the cancellation is shown everywhere."""
    stored, grant = await load_authorized(request, pool, user, prescription_id)
    _doctor(grant.user)
    now = _now()
    if stored.rx.cancelled_at is None and rules.status(stored.rx, now) is Status.DISPENSED:
        raise HTTPException(
            409, {"code": "already_dispensed", "message": "Ordonnance entièrement délivrée.", "line_no": None}
        )
    with rx_errors():
        async with pool.connection() as conn:
            await service.cancel(conn, prescription_id, by=user.id, reason=body.reason, now=now)
            fresh = await store.get(conn, prescription_id)
    assert fresh is not None
    return await _json(request, pool, fresh.rx, now)


@router.post(
    "/prescriptions/{prescription_id}/revise",
    status_code=status.HTTP_201_CREATED,
    summary="A new version of an undispensed prescription",
)
async def revise_prescription(
    request: Request, prescription_id: uuid.UUID, body: DraftIn, user: CurrentUser, pool: Pool
) -> dict[str, Any]:
    """The old version is cancelled (``superseded_by``); the new one has its own id and access code."""
    _, grant = await load_authorized(request, pool, user, prescription_id)
    _doctor(grant.user)
    now = _now()
    with rx_errors():
        async with pool.connection() as conn, conn.transaction():
            rx, code = await service.revise(
                conn, keys(request), load_formulary(), old_id=prescription_id, by=user.id, draft=body.draft(), now=now
            )
    out = prescription_json(rx, now=now, signer=keys(request).signer, dispenses=[])
    return out | {"access_code": codes.display(code)}


async def _code_of(request: Request, pool: Any, user: User, prescription_id: uuid.UUID) -> tuple[store.Stored, str]:
    stored, grant = await load_authorized(request, pool, user, prescription_id)
    _prescriber_or_patient(grant, stored)
    return stored, codes.unseal(keys(request).secret, prescription_id, stored.code_sealed)


@router.get("/prescriptions/{prescription_id}/access-code", summary="The access code and QR payload")
async def access_code(request: Request, prescription_id: uuid.UUID, user: CurrentUser, pool: Pool) -> dict[str, Any]:
    """Prescriber and patient only."""
    _stored, code = await _code_of(request, pool, user, prescription_id)
    payload = codes.qr_payload(base_url(request), prescription_id, code)
    return {
        "prescription_id": str(prescription_id),
        "access_code": codes.display(code),
        "qr_payload": payload,
        "pharmacy_url": payload,
    }


@router.get("/prescriptions/{prescription_id}/ordonnance.html", summary="Printable ordonnance (A4 HTML)")
async def ordonnance_html(request: Request, prescription_id: uuid.UUID, user: CurrentUser, pool: Pool) -> HTMLResponse:
    """French, with the QR code and the access code; prescriber and patient only."""
    stored, code = await _code_of(request, pool, user, prescription_id)
    rx = stored.rx
    page = printing.html_page(
        rx,
        payload=codes.qr_payload(base_url(request), rx.id, code),
        code=code,
        cancelled=rules.status(rx, _now()) is Status.CANCELLED,
    )
    return HTMLResponse(page, headers=printing.HTML_HEADERS)


@router.get("/prescriptions/{prescription_id}/ordonnance.pdf", summary="Printable ordonnance (PDF)")
async def ordonnance_pdf(request: Request, prescription_id: uuid.UUID, user: CurrentUser, pool: Pool) -> Response:
    """The same ordonnance as a PDF."""
    stored, code = await _code_of(request, pool, user, prescription_id)
    rx = stored.rx
    body = printing.pdf(
        rx,
        payload=codes.qr_payload(base_url(request), rx.id, code),
        code=code,
        cancelled=rules.status(rx, _now()) is Status.CANCELLED,
    )
    headers = {"Content-Disposition": f'inline; filename="ordonnance-{rx.id}.pdf"'}
    return Response(body, media_type="application/pdf", headers=headers)


@router.get("/prescriptions/{prescription_id}/qr.svg", summary="The QR code alone (SVG)")
async def qr_svg(request: Request, prescription_id: uuid.UUID, user: CurrentUser, pool: Pool) -> Response:
    """For the patient to show on a phone."""
    _, code = await _code_of(request, pool, user, prescription_id)
    svg = printing.qr_svg(codes.qr_payload(base_url(request), prescription_id, code))
    return Response(svg, media_type="image/svg+xml")
