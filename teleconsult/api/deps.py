"""FastAPI dependencies shared by every router and socket. Use the ``Annotated`` aliases:

- ``Pool`` — the app's ``psycopg_pool.AsyncConnectionPool`` (``async with pool.connection() as conn``).
- ``AppSettings`` — the :class:`~teleconsult.settings.Settings` the app was built with.
- ``CurrentUser`` / ``CurrentClinician`` (doctor, nurse) / ``CurrentAdmin`` / ``CurrentPatientUser`` —
  401 without valid credentials, 403 for another role. Credentials: ``Authorization: Bearer <access token>`` or the
  session cookie; cookie-authenticated POST/PUT/PATCH/DELETE also need ``X-CSRF-Token``.
- ``PatientAccess`` — for any route with a ``patient_id`` path (or query) parameter that touches patient data: checks
  the care team (clinicians and admins: an active assignment now; patients: themselves), appends one audit event
  (action "read" for GET/HEAD, else "write"; resource = route path template; outcome allowed/denied) and returns a
  :class:`~teleconsult.security.models.PatientGrant`, or 403.
- Websockets: ``user = await authenticate_websocket(websocket)`` (cookie + Origin check, ``?token=``, or a first
  message ``{"type": "auth", "token": "..."}``), then ``await authorize_patient(pool, user, patient_id, ...)`` per
  subscription. Both close/refuse with 1008 (policy violation).
- ``audit(pool, user, action=..., resource=..., patient_id=..., outcome=..., client_addr=..., detail=...)`` for anything
  else that must be audited (exports, websocket subscriptions, FHIR bundles).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import Depends, Request, WebSocket, WebSocketException, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.websockets import WebSocketState

from teleconsult.errors import AuthenticationError, AuthorizationError, CsrfError, TeleconsultError
from teleconsult.security import accounts, care_team, tokens
from teleconsult.security import audit as audit_log
from teleconsult.security.models import CLINICIAN_ROLES, PatientGrant, Role, User
from teleconsult.settings import Settings

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER: Final = "X-CSRF-Token"
WS_AUTH_TIMEOUT_S: Final = 10.0

DbPool = AsyncConnectionPool[AsyncConnection[Any]]


def get_pool(request: Request) -> DbPool:
    """The connection pool opened by the app's lifespan."""
    pool: DbPool = request.app.state.pool
    return pool


def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


Pool = Annotated[DbPool, Depends(get_pool)]
AppSettings = Annotated[Settings, Depends(get_settings)]

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /api/v1/auth/login (mode=token)")
_cookie = APIKeyCookie(name="tbib_session", auto_error=False, description="Browser session cookie (mode=cookie)")


def client_addr(request: Request | WebSocket) -> str | None:
    """The peer address (uvicorn already applied trusted X-Forwarded-For)."""
    return request.client.host if request.client else None


async def user_from_access_token(pool: DbPool, settings: Settings, token: str) -> User:
    """Verify an access token and load its live session's user (:class:`AuthenticationError` otherwise)."""
    claims = tokens.decode_access_token(
        token, secret=settings.secret_key.get_secret_value(), issuer=settings.jwt_issuer
    )
    async with pool.connection() as conn:
        return await accounts.session_user(conn, claims.user_id, claims.session_id, datetime.now(UTC))


async def current_user(
    request: Request,
    pool: Pool,
    settings: AppSettings,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    _cookie_doc: Annotated[str | None, Depends(_cookie)],
) -> User:
    """The authenticated user of this request (bearer token first, then the session cookie with CSRF check)."""
    if bearer is not None:
        user = await user_from_access_token(pool, settings, bearer.credentials)
    else:
        token = request.cookies.get(settings.cookie_name)
        if not token:
            raise AuthenticationError()
        user = await user_from_access_token(pool, settings, token)
        if request.method not in SAFE_METHODS:
            assert user.session_id is not None
            if not tokens.check_csrf(
                settings.secret_key.get_secret_value(), user.session_id, request.headers.get(CSRF_HEADER)
            ):
                raise CsrfError()
    request.state.user = user
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def require_roles(*roles: Role) -> Any:
    """A dependency that admits only ``roles`` (403 otherwise); returns the user."""
    allowed = frozenset(roles)

    async def dependency(user: CurrentUser) -> User:
        if user.role not in allowed:
            raise AuthorizationError(f"requires role {' or '.join(sorted(r.value for r in allowed))}")
        return user

    return Depends(dependency)


CurrentClinician = Annotated[User, require_roles(*CLINICIAN_ROLES)]
CurrentAdmin = Annotated[User, require_roles(Role.ADMIN)]
CurrentPatientUser = Annotated[User, require_roles(Role.PATIENT)]


async def audit(
    pool: DbPool,
    user: User | None,
    *,
    action: str,
    resource: str,
    outcome: str,
    patient_id: uuid.UUID | None = None,
    client_addr: str | None = None,
    detail: Mapping[str, Any] | None = None,
    actor_username: str | None = None,
) -> int:
    """Append one audit event on its own connection; returns the audit row id."""
    event = audit_log.AuditEvent(
        action=action,
        resource=resource,
        outcome=outcome,
        actor_id=user.id if user else None,
        actor_username=user.username if user else actor_username,
        actor_role=user.role.value if user else None,
        patient_id=patient_id,
        client_addr=client_addr,
        detail=detail or {},
    )
    async with pool.connection() as conn:
        return await audit_log.append(conn, event)


async def authorize_patient(
    pool: DbPool,
    user: User,
    patient_id: uuid.UUID,
    *,
    action: str,
    resource: str,
    client_addr: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> PatientGrant:
    """Care-team check + audit event for one access; :class:`AuthorizationError` when refused (audited too)."""
    async with pool.connection() as conn:
        via = await care_team.access_via(conn, user, patient_id)
    await audit(
        pool,
        user,
        action=action,
        resource=resource,
        outcome=audit_log.ALLOWED if via else audit_log.DENIED,
        patient_id=patient_id,
        client_addr=client_addr,
        detail=detail,
    )
    if via is None:
        raise AuthorizationError("not on this patient's care team")
    return PatientGrant(user=user, patient_id=patient_id, via=via)


def route_template(request: Request | WebSocket) -> str:
    """``"GET /api/v1/patients/{patient_id}/consents"``: the path with parameter values put back as names."""
    by_value = {str(v): k for k, v in request.path_params.items()}
    path = "/".join(f"{{{by_value[seg]}}}" if seg in by_value else seg for seg in request.url.path.split("/"))
    method = request.scope.get("method", "WS")
    return f"{method} {path}"


async def patient_access(request: Request, patient_id: uuid.UUID, user: CurrentUser, pool: Pool) -> PatientGrant:
    """Dependency behind ``PatientAccess``."""
    return await authorize_patient(
        pool,
        user,
        patient_id,
        action=audit_log.READ if request.method in SAFE_METHODS else audit_log.WRITE,
        resource=route_template(request),
        client_addr=client_addr(request),
    )


PatientAccess = Annotated[PatientGrant, Depends(patient_access)]


# --- websockets ----------------------------------------------------------------------------------------------------


def _ws_settings_pool(websocket: WebSocket) -> tuple[Settings, DbPool]:
    return websocket.app.state.settings, websocket.app.state.pool


def _origin_allowed(websocket: WebSocket, settings: Settings) -> bool:
    """Cookies ride along on cross-site websocket handshakes: accept cookie auth only from our own origin."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser
    host = websocket.headers.get("host", "")
    own = {f"https://{host}", f"http://{host}"}
    return origin in own or origin in settings.cors_origins


async def authenticate_websocket(websocket: WebSocket) -> User:
    """Authenticate a websocket on connect, before any data flows.

    Token sources, in order: the session cookie (only from an allowed Origin), ``?token=<access token>``, else the
    socket is accepted and the first message must be ``{"type": "auth", "token": "..."}`` within 10 s. On failure
    raises ``WebSocketException(1008)``. The socket may already be accepted on return: call :func:`accept_websocket`.
    """
    settings, pool = _ws_settings_pool(websocket)
    token = websocket.cookies.get(settings.cookie_name)
    if token and not _origin_allowed(websocket, settings):
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="origin not allowed")
    token = token or websocket.query_params.get("token")
    if not token:
        await websocket.accept()
        try:
            first = await asyncio.wait_for(websocket.receive_text(), WS_AUTH_TIMEOUT_S)
            msg = json.loads(first)
            token = msg.get("token") if isinstance(msg, dict) and msg.get("type") == "auth" else None
        except (TimeoutError, ValueError, KeyError) as exc:
            raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="authentication required") from exc
        if not isinstance(token, str):
            raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="authentication required")
    try:
        user = await user_from_access_token(pool, settings, token)
    except TeleconsultError as exc:
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="invalid credentials") from exc
    websocket.state.user = user
    return user


async def accept_websocket(websocket: WebSocket) -> None:
    """Accept the socket unless :func:`authenticate_websocket` already did."""
    if websocket.application_state == WebSocketState.CONNECTING:
        await websocket.accept()


async def authorize_websocket_patient(
    websocket: WebSocket, user: User, patient_id: uuid.UUID, *, action: str = "subscribe"
) -> PatientGrant:
    """Care-team check + audit for a websocket subscription; ``WebSocketException(1008)`` when refused."""
    _, pool = _ws_settings_pool(websocket)
    try:
        return await authorize_patient(
            pool,
            user,
            patient_id,
            action=action,
            resource=route_template(websocket),
            client_addr=client_addr(websocket),
        )
    except AuthorizationError as exc:
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason=exc.reason) from exc
