"""The ``/fhir/r4`` router: read, search, ``$everything`` and transaction/batch import (``application/fhir+json``).

Every failure answers an ``OperationOutcome`` (:class:`FhirRoute` wraps each handler, dependencies included): 400 for
bad parameters or resources, 401/403 for authentication and care-team refusals, 404 for unknown resources or paths,
never FastAPI's ``{"detail": ...}``. Security is the REST API's: bearer token or session cookie
(``teleconsult.api.deps.CurrentUser``), care-team check and one audit row per patient touched
(``teleconsult.api.deps.authorize_patient``). ``POST /fhir/r4`` also accepts a gateway's broker credential as HTTP
Basic (``gateway_id:secret``, :mod:`teleconsult.security.gateway_auth`): it may import only for the patients bound to
the gateway, through its own devices, audited with ``gateway:<id>`` as actor; the read routes refuse it (403).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param
from starlette.exceptions import HTTPException
from starlette.responses import Response

from teleconsult.api.deps import (
    AppSettings,
    CurrentAdmin,
    CurrentUser,
    DbPool,
    Pool,
    audit,
    authorize_patient,
    client_addr,
    current_user,
    route_template,
)
from teleconsult.errors import (
    AuthenticationError,
    AuthorizationError,
    ConsentRequiredError,
    NotFoundError,
    TeleconsultError,
)
from teleconsult.fhir import bundle, search
from teleconsult.fhir import store as fstore
from teleconsult.fhir.audit_event import audit_event_resource
from teleconsult.fhir.capability import capability_statement
from teleconsult.fhir.errors import FhirError, InvalidResourceError, ResourceNotFoundError
from teleconsult.fhir.observation import is_anchor, observation
from teleconsult.fhir.resources import (
    GATEWAY_PREFIX,
    device_resource,
    flag_resource,
    gateway_device_id,
    gateway_resource,
    outcome,
    patient_resource,
)
from teleconsult.fhir.transaction import import_bundle
from teleconsult.security import audit as audit_log
from teleconsult.security import gateway_auth
from teleconsult.security.consent import has_consent
from teleconsult.security.gateway_auth import GatewayPrincipal, VerifiedSecrets
from teleconsult.security.models import ConsentPurpose, User

log = logging.getLogger(__name__)

PREFIX: Final = "/fhir/r4"
FHIR_JSON: Final = "application/fhir+json"
SOFTWARE_VERSION: Final = "0.1.0"
MAX_BUNDLE_BYTES: Final = 32 << 20
CHALLENGE: Final = 'Bearer, Basic realm="tbib gateway import"'
VERIFIED_SECRETS: Final = VerifiedSecrets(ttl_s=60.0)
"""PBKDF2 results of gateway secrets, 60 s (revocation and re-key still apply at once: the row is read every time)."""


class FhirResponse(Response):
    """``application/fhir+json`` rendered with orjson."""

    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem(status: int, code: str, diagnostics: str, expression: str | None = None) -> FhirResponse:
    """An error answer: an OperationOutcome with one issue."""
    headers = {"WWW-Authenticate": CHALLENGE} if status == 401 else None
    return FhirResponse(outcome([(code, diagnostics, expression)]), status_code=status, headers=headers)


def error_response(exc: Exception) -> FhirResponse:
    """Map an exception to its OperationOutcome answer (the only place of this package that picks HTTP statuses)."""
    if isinstance(exc, ResourceNotFoundError):
        return problem(404, exc.code, exc.message)
    if isinstance(exc, FhirError):
        return problem(400, exc.code, exc.message, exc.expression)
    if isinstance(exc, AuthenticationError):
        return problem(401, "login", exc.reason)
    if isinstance(exc, AuthorizationError):
        return problem(403, "forbidden", exc.reason)
    if isinstance(exc, NotFoundError):
        return problem(404, "not-found", str(exc))
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return problem(400, "invalid", f"{where}: {first.get('msg', 'invalid request')}")
    if isinstance(exc, HTTPException):
        code = "not-found" if exc.status_code == 404 else "processing"
        return problem(exc.status_code, code, str(exc.detail))
    log.error("unhandled %s in the FHIR API", type(exc).__name__, exc_info=exc)
    return problem(500, "exception", "internal error")


class FhirRoute(APIRoute):
    """An APIRoute whose every error (dependencies and validation included) becomes an OperationOutcome."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except (TeleconsultError, RequestValidationError, HTTPException) as exc:
                return error_response(exc)

        return run


router = APIRouter(route_class=FhirRoute, tags=["fhir"])


def base_url(request: Request) -> str:
    """``http(s)://host/fhir/r4`` as the client reached us."""
    return str(request.base_url).rstrip("/") + PREFIX


def _now() -> datetime:
    return datetime.now(UTC)


async def _authorize(request: Request, pool: DbPool, user: User, patient_id: uuid.UUID, **detail: Any) -> None:
    """Care-team check (audited); a read by anyone but the patient themself also needs ``data_sharing`` consent:
    FHIR is how a record leaves tbib for other software (no decision on file is no consent; the refusal is audited)."""
    reading = request.method == "GET"
    grant = await authorize_patient(
        pool,
        user,
        patient_id,
        action=audit_log.READ if reading else audit_log.WRITE,
        resource=route_template(request),
        client_addr=client_addr(request),
        detail=detail or None,
    )
    if not reading or grant.via == "self":
        return
    async with pool.connection() as conn:
        shared = await has_consent(conn, patient_id, ConsentPurpose.DATA_SHARING)
    if not shared:
        await audit(
            pool,
            user,
            action=audit_log.READ,
            resource=route_template(request),
            outcome=audit_log.DENIED,
            patient_id=patient_id,
            client_addr=client_addr(request),
            detail={**detail, "reason": "no data_sharing consent"},
        )
        raise ConsentRequiredError(patient_id, ConsentPurpose.DATA_SHARING.value)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """``(gateway id, secret)`` of an ``Authorization: Basic`` header; None for any other scheme."""
    scheme, param = get_authorization_scheme_param(request.headers.get("Authorization"))
    if scheme.lower() != "basic":
        return None
    try:
        gateway_id, sep, secret = base64.b64decode(param, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationError("malformed Basic credentials") from None
    if not sep or not gateway_id or not secret:
        raise AuthenticationError("Basic credentials must be gateway_id:secret")
    return gateway_id, secret


async def _audit_gateway(
    request: Request, pool: DbPool, actor: str, outcome: str, patient_id: uuid.UUID | None, **detail: Any
) -> None:
    event = audit_log.AuditEvent(
        action=audit_log.READ if request.method == "GET" else audit_log.WRITE,
        resource=route_template(request),
        outcome=outcome,
        actor_username=actor,
        actor_role=gateway_auth.ROLE,
        patient_id=patient_id,
        client_addr=client_addr(request),
        detail=detail,
    )
    async with pool.connection() as conn:
        await audit_log.append(conn, event)


async def authenticate_gateway(request: Request, pool: DbPool) -> GatewayPrincipal | None:
    """The gateway of a Basic ``Authorization`` header (401 when wrong, revoked or unknown, audited); None without."""
    creds = _basic_credentials(request)
    if creds is None:
        return None
    gateway_id, secret = creds
    try:
        async with pool.connection() as conn:
            return await gateway_auth.authenticate_gateway(conn, gateway_id, secret, VERIFIED_SECRETS, time.monotonic())
    except AuthenticationError as exc:
        await _audit_gateway(
            request, pool, f"{gateway_auth.ROLE}:{gateway_id[:64]}", audit_log.DENIED, None, reason=exc.reason
        )
        raise


async def refuse_gateway(request: Request, pool: Pool) -> None:
    """Read routes: a gateway credential authenticates (401 when wrong) but may not read (403, audited)."""
    gw = await authenticate_gateway(request, pool)
    if gw is not None:
        await _audit_gateway(request, pool, gw.actor, audit_log.DENIED, None, reason="gateways may only import")
        raise AuthorizationError("a gateway credential may only import (POST /fhir/r4), never read")


NO_GATEWAY: Final = Depends(refuse_gateway)


async def importer(request: Request, pool: Pool, settings: AppSettings) -> User | GatewayPrincipal:
    """``POST /fhir/r4``: a gateway (HTTP Basic) or a user (bearer token or session cookie + CSRF)."""
    gw = await authenticate_gateway(request, pool)
    if gw is not None:
        return gw
    scheme, param = get_authorization_scheme_param(request.headers.get("Authorization"))
    bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=param) if scheme.lower() == "bearer" else None
    return await current_user(request, pool, settings, bearer, None)


def _uuid(value: str, rtype: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ResourceNotFoundError(rtype, value[:64]) from None


@router.get("/metadata", summary="CapabilityStatement")
async def metadata(request: Request) -> FhirResponse:
    """What this server implements (public, as FHIR clients expect)."""
    return FhirResponse(capability_statement(base_url(request), _now(), SOFTWARE_VERSION))


@router.get("/Patient/{patient_id}", summary="Read a Patient", dependencies=[NO_GATEWAY])
async def read_patient(request: Request, patient_id: str, user: CurrentUser, pool: Pool) -> FhirResponse:
    pid = _uuid(patient_id, "Patient")
    await _authorize(request, pool, user, pid)
    async with pool.connection() as conn:
        record = await fstore.get_patient(conn, pid)
    if record is None:
        raise ResourceNotFoundError("Patient", patient_id)
    return FhirResponse(patient_resource(record))


@router.get("/Patient", summary="Search patients by identifier", dependencies=[NO_GATEWAY])
async def search_patients(request: Request, user: CurrentUser, pool: Pool) -> FhirResponse:
    """``identifier=[system|]value`` (CIN, MRN, tbib id) or ``_id``; only patients the caller may see are returned."""
    q = search.patient_query(list(request.query_params.multi_items()))
    async with pool.connection() as conn:
        ids: list[uuid.UUID] = []
        if q.identifier is not None:
            ids = await fstore.find_patients(conn, *q.identifier)
        if q.ids is not None:
            ids = [i for i in q.ids if i in ids] if q.identifier is not None else list(q.ids)
    records = []
    for pid in ids:
        try:
            await _authorize(request, pool, user, pid, search="Patient")
        except AuthorizationError:
            continue  # not on the care team: not in the result (the refusal is audited)
        async with pool.connection() as conn:
            record = await fstore.get_patient(conn, pid)
        if record is not None:
            records.append(patient_resource(record))
    self_url = str(request.url)
    return FhirResponse(
        bundle.searchset(base_url(request), records, total=len(records), links={"self": self_url}, now=_now())
    )


@router.get("/Device/{device_id}", summary="Read a Device (BLE device, or gateway gw.<id>)", dependencies=[NO_GATEWAY])
async def read_device(request: Request, device_id: str, user: CurrentUser, pool: Pool) -> FhirResponse:
    async with pool.connection() as conn:
        if device_id.startswith(GATEWAY_PREFIX):
            gw = await fstore.get_gateway(conn, device_id.removeprefix(GATEWAY_PREFIX))
            resource = None if gw is None else gateway_resource(gw)
            owner = None if gw is None else gw.patient_id
        else:
            dev = await fstore.get_device(conn, _uuid(device_id, "Device"))
            resource = None if dev is None else device_resource(dev)
            owner = None if dev is None else dev.patient_id
    if resource is None or owner is None:
        raise ResourceNotFoundError("Device", device_id)
    await _authorize(request, pool, user, owner, device=device_id)
    return FhirResponse(resource)


@router.get("/Observation/{observation_id}", summary="Read an Observation", dependencies=[NO_GATEWAY])
async def read_observation(request: Request, observation_id: str, user: CurrentUser, pool: Pool) -> FhirResponse:
    rid = _uuid(observation_id, "Observation")
    async with pool.connection() as conn:
        r = await fstore.get_reading(conn, rid)
        if r is None:
            raise ResourceNotFoundError("Observation", observation_id)
        await _authorize(request, pool, user, r.patient_id, observation=observation_id)
        if not is_anchor(r):
            return problem(404, "not-found", f"reading {rid} is a component of a blood pressure panel (code 85354-9)")
        comps = await fstore.companions(conn, [r])
    return FhirResponse(observation(r, comps.get(r.group_id, []) if r.group_id else []))


def _page_links(request: Request, q: search.ObservationQuery, page: fstore.Page, path: str) -> dict[str, str]:
    base = str(request.base_url).rstrip("/") + path
    links = {"self": str(request.url)}
    keys = [(r.measured_at, r.reading_id) for r in page.anchors]
    if not keys:
        return links
    forward = q.cursor is None or q.cursor.forward
    more_after = page.has_more if forward else True
    more_before = q.cursor is not None and (page.has_more if not forward else True)
    if more_after:
        token = search.encode_cursor(search.next_cursor(q, keys, page.total))
        links["next"] = f"{base}?{urlencode([*q.params, (search.PAGE_PARAM, token)])}"
    if more_before:
        token = search.encode_cursor(search.prev_cursor(q, keys, page.total))
        links["previous"] = f"{base}?{urlencode([*q.params, (search.PAGE_PARAM, token)])}"
    return links


def _observations(page: fstore.Page) -> list[dict[str, Any]]:
    return [observation(r, page.companions.get(r.group_id, []) if r.group_id else []) for r in page.anchors]


@router.get("/Observation", summary="Search Observations (searchset, keyset paging)", dependencies=[NO_GATEWAY])
async def search_observations(request: Request, user: CurrentUser, pool: Pool) -> FhirResponse:
    now = _now()
    q = search.observation_query(list(request.query_params.multi_items()), now=now)
    await _authorize(request, pool, user, q.patient_id, search="Observation")
    async with pool.connection() as conn:
        page = await fstore.search_readings(conn, q)
    links = _page_links(request, q, page, f"{PREFIX}/Observation")
    return FhirResponse(
        bundle.searchset(base_url(request), _observations(page), total=page.total, links=links, now=now)
    )


@router.get("/Patient/{patient_id}/$everything", summary="Patient $everything (paged)", dependencies=[NO_GATEWAY])
async def everything(request: Request, patient_id: str, user: CurrentUser, pool: Pool) -> FhirResponse:
    """Patient, devices, gateways, open alerts (Flag) on the first page; the observations of ``start``..``end``."""
    pid = _uuid(patient_id, "Patient")
    now = _now()
    q = search.observation_query(list(request.query_params.multi_items()), now=now, patient_id=pid)
    await _authorize(request, pool, user, pid, operation="$everything")
    includes: list[dict[str, Any]] = []
    async with pool.connection() as conn:
        if q.cursor is None:
            record = await fstore.get_patient(conn, pid)
            if record is None:
                raise ResourceNotFoundError("Patient", patient_id)
            devices, gateways = await fstore.patient_devices(conn, pid)
            includes.append(patient_resource(record))
            includes += [gateway_resource(g) for g in gateways if gateway_device_id(g.id)]
            includes += [device_resource(d) for d in devices]
            includes += [flag_resource(a) for a in await fstore.open_alerts(conn, pid)]
        page = await fstore.search_readings(conn, q)
    links = _page_links(request, q, page, f"{PREFIX}/Patient/{pid}/$everything")
    matches = includes + _observations(page)
    total = None if page.total is None else page.total + len(includes)
    return FhirResponse(bundle.searchset(base_url(request), matches, total=total, links=links, now=now))


@router.get("/AuditEvent", summary="A patient's audit trail (admins only)", dependencies=[NO_GATEWAY])
async def audit_events(request: Request, user: CurrentAdmin, pool: Pool) -> FhirResponse:
    """``patient`` (required), ``_count`` (1..1000, default 100); newest first, ``next`` pages older rows."""
    params = list(request.query_params.multi_items())
    patient_id, count, before = search.audit_query(params)
    await audit(
        pool,
        user,
        action=audit_log.READ,
        resource=route_template(request),
        outcome=audit_log.ALLOWED,
        patient_id=patient_id,
        client_addr=client_addr(request),
        detail={"search": "AuditEvent"},
    )
    async with pool.connection() as conn:
        rows = await audit_log.events_for_patient(conn, patient_id, limit=count + 1, before_id=before)
    links = {"self": str(request.url)}
    if len(rows) > count:
        rows = rows[:count]
        kept = [(k, v) for k, v in params if k != search.PAGE_PARAM]
        links["next"] = f"{base_url(request)}/AuditEvent?{urlencode([*kept, (search.PAGE_PARAM, str(rows[-1].id))])}"
    resources = [audit_event_resource(r) for r in rows]
    return FhirResponse(bundle.searchset(base_url(request), resources, total=None, links=links, now=_now()))


@router.post("", summary="Import a transaction or batch Bundle of Observations (+ Devices)")
async def transaction(
    request: Request, caller: Annotated[User | GatewayPrincipal, Depends(importer)], pool: Pool
) -> FhirResponse:
    body = await request.body()
    if len(body) > MAX_BUNDLE_BYTES:
        raise InvalidResourceError(f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidResourceError(f"body is not JSON: {exc}"[:200]) from None

    async def authorize(patient_id: uuid.UUID, entries: int) -> None:
        if isinstance(caller, User):
            await _authorize(request, pool, caller, patient_id, operation="import", entries=entries)
            return
        bound = patient_id in caller.patient_ids
        outcome = audit_log.ALLOWED if bound else audit_log.DENIED
        await _audit_gateway(request, pool, caller.actor, outcome, patient_id, operation="import", entries=entries)
        if not bound:
            raise AuthorizationError(f"patient not bound to gateway {caller.gateway_id}")

    gateway = caller.gateway_id if isinstance(caller, GatewayPrincipal) else None
    status, answer = await import_bundle(
        pool, doc, authorize=authorize, base=base_url(request), now=_now(), gateway_id=gateway
    )
    return FhirResponse(answer, status_code=status)


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def unknown(path: str) -> FhirResponse:
    """Anything else under /fhir/r4: 404 with an OperationOutcome (not FastAPI's body)."""
    return problem(404, "not-supported", f"{path[:80]!r} is not implemented by this server (see /fhir/r4/metadata)")
