"""``/fhir/r4`` reads of prescriptions (issue 18): ``MedicationRequest``, ``MedicationDispense``, ``Medication``.

The same rules as the other FHIR reads (:func:`teleconsult.fhir.api._authorize`: care team or the patient, audited,
``data_sharing`` consent for anyone but the patient); gateways are refused (403). Pharmacists are never on a care team,
so they get 403 here: a pharmacy works through ``/api/v1/pharmacy`` with the access code. ``Medication`` (a formulary
product) is not patient data: any authenticated account. Ids: ``MedicationRequest/<prescription id>-<line no>``,
``MedicationDispense/<dispense id>-<line no>``, ``Medication/<formulary id>``. Search: ``?patient=<id>`` (one page).
Included before the FHIR router (``teleconsult/api/extensions/fhir.py``) so its catch-all does not shadow these.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import APIRouter, Request

from teleconsult.api.deps import CurrentUser, Pool
from teleconsult.fhir import bundle
from teleconsult.fhir.api import NO_GATEWAY, FhirResponse, FhirRoute, _authorize, base_url
from teleconsult.fhir.errors import InvalidSearchError, ResourceNotFoundError
from teleconsult.fhir.medication import medication_dispense, medication_request, medication_resource
from teleconsult.prescriptions import rules, store
from teleconsult.prescriptions.formulary import load as load_formulary

router = APIRouter(route_class=FhirRoute, tags=["fhir"])

_LINE_ID: Final = re.compile(r"^([0-9a-fA-F-]{36})-(\d{1,2})$")


def _line_id(value: str, rtype: str) -> tuple[uuid.UUID, int]:
    m = _LINE_ID.match(value)
    if m is None:
        raise ResourceNotFoundError(rtype, value)
    try:
        return uuid.UUID(m.group(1)), int(m.group(2))
    except ValueError:
        raise ResourceNotFoundError(rtype, value) from None


def _patient_param(request: Request) -> uuid.UUID:
    params = dict(request.query_params.multi_items())
    unknown = set(params) - {"patient", "subject", "_count"}
    if unknown:
        raise InvalidSearchError(f"unknown search parameter {sorted(unknown)[0]!r}", param=sorted(unknown)[0])
    value = (params.get("patient") or params.get("subject") or "").removeprefix("Patient/")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidSearchError("patient=<id> is required", param="patient") from None


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("/MedicationRequest/{request_id}", summary="Read a MedicationRequest", dependencies=[NO_GATEWAY])
async def read_medication_request(request: Request, request_id: str, user: CurrentUser, pool: Pool) -> FhirResponse:
    rx_id, line_no = _line_id(request_id, "MedicationRequest")
    async with pool.connection() as conn:
        stored = await store.get(conn, rx_id)
    line = stored.rx.line(line_no) if stored else None
    if stored is None or line is None:
        raise ResourceNotFoundError("MedicationRequest", request_id)
    await _authorize(request, pool, user, stored.rx.patient.id, prescription=str(rx_id))
    return FhirResponse(medication_request(stored.rx, line, rules.line_status(stored.rx, line, _now())))


@router.get("/MedicationRequest", summary="Search a patient's MedicationRequests", dependencies=[NO_GATEWAY])
async def search_medication_requests(request: Request, user: CurrentUser, pool: Pool) -> FhirResponse:
    patient_id = _patient_param(request)
    await _authorize(request, pool, user, patient_id, search="MedicationRequest")
    now = _now()
    async with pool.connection() as conn:
        rxs = await store.list_for_patient(conn, patient_id)
    found = [medication_request(rx, ln, rules.line_status(rx, ln, now)) for rx in rxs for ln in rx.lines]
    return FhirResponse(
        bundle.searchset(base_url(request), found, total=len(found), links={"self": str(request.url)}, now=now)
    )


@router.get("/MedicationDispense/{dispense_id}", summary="Read a MedicationDispense", dependencies=[NO_GATEWAY])
async def read_medication_dispense(request: Request, dispense_id: str, user: CurrentUser, pool: Pool) -> FhirResponse:
    d_id, line_no = _line_id(dispense_id, "MedicationDispense")
    async with pool.connection() as conn:
        cur = await conn.execute("select prescription_id from dispenses where id = %s", (d_id,))
        row = await cur.fetchone()
        stored = await store.get(conn, row[0]) if row else None
        ds = await store.dispenses(conn, prescription_ids=[row[0]]) if row else []
    d = next((x for x in ds if x.id == d_id), None)
    dl = next((x for x in d.lines if x.line_no == line_no), None) if d else None
    if stored is None or d is None or dl is None:
        raise ResourceNotFoundError("MedicationDispense", dispense_id)
    await _authorize(request, pool, user, stored.rx.patient.id, dispense=str(d_id))
    return FhirResponse(medication_dispense(stored.rx, d, dl))


@router.get("/MedicationDispense", summary="Search a patient's MedicationDispenses", dependencies=[NO_GATEWAY])
async def search_medication_dispenses(request: Request, user: CurrentUser, pool: Pool) -> FhirResponse:
    patient_id = _patient_param(request)
    await _authorize(request, pool, user, patient_id, search="MedicationDispense")
    async with pool.connection() as conn:
        ds = await store.dispenses(conn, patient_id=patient_id)
        rxs = {rx.id: rx for rx in await store.list_for_patient(conn, patient_id, limit=1000)}
    found: list[dict[str, Any]] = [
        medication_dispense(rxs[d.prescription_id], d, dl) for d in ds if d.prescription_id in rxs for dl in d.lines
    ]
    return FhirResponse(
        bundle.searchset(base_url(request), found, total=len(found), links={"self": str(request.url)}, now=_now())
    )


@router.get("/Medication/{medication_id}", summary="Read a Medication (formulary product)", dependencies=[NO_GATEWAY])
async def read_medication(medication_id: str, user: CurrentUser) -> FhirResponse:
    product = load_formulary().get(medication_id)
    if product is None:
        raise ResourceNotFoundError("Medication", medication_id)
    return FhirResponse(medication_resource(product))
