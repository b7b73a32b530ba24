"""Login, refresh, logout, me, TOTP enrolment.

Two session styles:
- ``mode="token"`` (API clients, agents): the body carries ``access_token`` (Bearer) and ``refresh_token``.
- ``mode="cookie"`` (the dashboard): HttpOnly+Secure+SameSite=Strict cookies carry both tokens (the refresh cookie only
  to ``/api/v1/auth``); the body carries ``csrf_token`` (also in a readable cookie) to echo in ``X-CSRF-Token`` on every
  POST/PUT/PATCH/DELETE, including ``/auth/refresh`` and ``/auth/logout``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import pyotp
from fastapi import APIRouter, Body, Request, Response, status

from teleconsult.api.deps import CSRF_HEADER, AppSettings, CurrentUser, Pool, audit, client_addr
from teleconsult.api.schemas import ApiModel, Password, Username, UserOut
from teleconsult.errors import AuthenticationError, AuthorizationError, CsrfError, LockedOutError, SecurityError
from teleconsult.security import accounts, tokens
from teleconsult.security.accounts import LoginPolicy, LoginResult
from teleconsult.security.models import Role, User
from teleconsult.settings import Settings

router = APIRouter(prefix="/auth", tags=["auth"])

AUTH_PATH = "/api/v1/auth"


class LoginRequest(ApiModel):
    """Credentials; ``totp`` only for accounts with a second factor."""

    username: Username
    password: Password
    totp: str | None = None
    mode: Literal["token", "cookie"] = "token"


class RefreshRequest(ApiModel):
    """Token mode sends the refresh token; cookie mode sends an empty body (the cookie carries it)."""

    refresh_token: str | None = None
    mode: Literal["token", "cookie"] = "token"


class SessionOut(ApiModel):
    """A session: tokens in token mode, the CSRF token in cookie mode."""

    user: UserOut
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
    access_token: str | None = None
    refresh_token: str | None = None
    csrf_token: str | None = None


class TotpSetupOut(ApiModel):
    """A pending TOTP secret and the otpauth:// URI for an authenticator app."""

    secret: str
    provisioning_uri: str


class TotpCode(ApiModel):
    """A 6-digit code from the authenticator app."""

    code: str


def policy_of(settings: Settings) -> LoginPolicy:
    """The lockout policy from settings."""
    return LoginPolicy(
        threshold=settings.lockout_threshold,
        window_s=settings.lockout_window_s,
        duration_s=settings.lockout_duration_s,
        ip_failure_limit=settings.ip_failure_limit,
        refresh_ttl_s=settings.refresh_token_ttl_s,
    )


def _issue(settings: Settings, result: LoginResult, mode: str, response: Response) -> SessionOut:
    secret = settings.secret_key.get_secret_value()
    access = tokens.issue_access_token(
        secret=secret,
        issuer=settings.jwt_issuer,
        user_id=result.user.id,
        session_id=result.session_id,
        role=result.user.role,
        now=datetime.now(UTC),
        ttl_s=settings.access_token_ttl_s,
    )
    out = SessionOut(user=UserOut.of(result.user), expires_in=settings.access_token_ttl_s)
    if mode == "token":
        return out.model_copy(update={"access_token": access, "refresh_token": result.refresh_token})
    csrf = tokens.csrf_token(secret, result.session_id)
    ttl = settings.refresh_token_ttl_s
    for name, value, path, httponly in (
        (settings.cookie_name, access, "/", True),
        (settings.refresh_cookie_name, result.refresh_token, AUTH_PATH, True),
        (settings.csrf_cookie_name, csrf, "/", False),
    ):
        response.set_cookie(
            name, value, max_age=ttl, path=path, httponly=httponly, secure=settings.cookie_secure, samesite="strict"
        )
    return out.model_copy(update={"csrf_token": csrf})


def _clear_cookies(settings: Settings, response: Response) -> None:
    for name, path in (
        (settings.cookie_name, "/"),
        (settings.refresh_cookie_name, AUTH_PATH),
        (settings.csrf_cookie_name, "/"),
    ):
        response.delete_cookie(name, path=path, secure=settings.cookie_secure, httponly=True, samesite="strict")


@router.post("/login", summary="Log in (token or cookie session)")
async def login(
    body: LoginRequest, request: Request, response: Response, pool: Pool, settings: AppSettings
) -> SessionOut:
    """Check credentials with lockout (401 wrong, 401 ``totp_required``, 429 locked with Retry-After)."""
    addr = client_addr(request)
    resource = f"POST {AUTH_PATH}/login"
    try:
        async with pool.connection() as conn:
            result = await accounts.login(
                conn,
                policy_of(settings),
                username=body.username,
                password=body.password,
                totp_code=body.totp,
                client_addr=addr,
                user_agent=request.headers.get("user-agent"),
                now=datetime.now(UTC),
            )
    except SecurityError as exc:
        outcome = "locked" if isinstance(exc, LockedOutError) else "failure"
        await audit(
            pool, None, action="login", resource=resource, outcome=outcome, client_addr=addr,
            actor_username=accounts.normalize_username(body.username), detail={"reason": str(exc)},
        )  # fmt: skip
        raise
    await audit(pool, result.user, action="login", resource=resource, outcome="success", client_addr=addr)
    return _issue(settings, result, body.mode, response)


@router.post("/refresh", summary="Rotate the refresh token and get a new access token")
async def refresh(
    request: Request,
    response: Response,
    pool: Pool,
    settings: AppSettings,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> SessionOut:
    """Token mode: ``refresh_token`` in the body. Cookie mode: the refresh cookie plus ``X-CSRF-Token``."""
    mode = body.mode if body else "token"
    token = body.refresh_token if body and body.refresh_token else None
    if token is None:
        token = request.cookies.get(settings.refresh_cookie_name)
        if not token:
            raise AuthenticationError("no refresh token")
        mode = "cookie"
        session_id, _ = tokens.split_refresh_token(token)
        if not tokens.check_csrf(settings.secret_key.get_secret_value(), session_id, request.headers.get(CSRF_HEADER)):
            raise CsrfError()
    async with pool.connection() as conn:
        result = await accounts.refresh(conn, token, policy_of(settings), datetime.now(UTC))
    return _issue(settings, result, mode, response)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End this session")
async def logout(request: Request, user: CurrentUser, pool: Pool, settings: AppSettings) -> Response:
    """Revoke the session (its tokens stop working) and clear the cookies."""
    assert user.session_id is not None
    async with pool.connection() as conn:
        await accounts.logout(conn, user.session_id, datetime.now(UTC))
    await audit(pool, user, action="logout", resource=f"POST {AUTH_PATH}/logout", outcome="success",
                client_addr=client_addr(request))  # fmt: skip
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _clear_cookies(settings, response)
    return response


@router.get("/me", summary="The current user")
async def me(user: CurrentUser) -> UserOut:
    """Who am I."""
    return UserOut.of(user)


def _require_staff(user: User) -> None:
    if user.role is Role.PATIENT:
        raise AuthorizationError("TOTP is available to clinicians and admins")


@router.post("/totp/setup", summary="Start TOTP enrolment (clinicians and admins)")
async def totp_setup(user: CurrentUser, pool: Pool, settings: AppSettings) -> TotpSetupOut:
    """A new secret; TOTP is enforced only after ``/auth/totp/enable`` confirms a code."""
    _require_staff(user)
    async with pool.connection() as conn:
        secret = await accounts.begin_totp(conn, user.id)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=settings.totp_issuer)
    return TotpSetupOut(secret=secret, provisioning_uri=uri)


@router.post("/totp/enable", status_code=status.HTTP_204_NO_CONTENT, summary="Confirm a TOTP code and enforce it")
async def totp_enable(body: TotpCode, user: CurrentUser, pool: Pool) -> Response:
    """From now on, login needs a code (409 for a wrong code or no pending secret)."""
    _require_staff(user)
    async with pool.connection() as conn:
        await accounts.enable_totp(conn, user.id, body.code, datetime.now(UTC))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
