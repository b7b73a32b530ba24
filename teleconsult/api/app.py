"""The FastAPI application: ``create_app(settings) -> FastAPI``.

How features plug in (no edit of this file needed):

1. **REST routers** — put a module in ``teleconsult/api/routes/`` that defines ``router = APIRouter(...)``; every such
   module (names not starting with ``_``) is included under ``/api/v1`` (:data:`ROUTERS`, discovered at import).
   Patient-data routes take ``patient_id`` as a path parameter and depend on ``deps.PatientAccess``; and add a line per
   route to ``tests/teleconsult/api/route_matrix.py`` (the authorization matrix fails on routes without one).
2. **Extensions** — anything with its own prefix or background work (websockets under ``/ws/v1``, ``/fhir/r4``, the
   dashboard at ``/``, the ingest worker, the alert engine, signaling): a module in ``teleconsult/api/extensions/``
   that defines ``extension = Extension(name=..., routers=[(router, "/ws/v1")], lifespan=..., enabled=...)``.
   ``lifespan(app)`` is an async context manager entered after the pool is open (``app.state.pool``,
   ``app.state.settings`` are set) and exited before it closes, in reverse order; put services on ``app.state``.
   ``enabled(settings)`` lets settings (e.g. ``settings.ext["ingest"]``) switch it off. ``create_app(settings,
   extensions=[...])`` overrides discovery (tests).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool

from teleconsult import errors
from teleconsult.api import extensions as extensions_pkg
from teleconsult.api import routes as routes_pkg
from teleconsult.api.headers import SecurityHeadersMiddleware
from teleconsult.settings import Settings
from teleconsult.store.failover import check_writable

log = logging.getLogger(__name__)

API_PREFIX: Final = "/api/v1"


@dataclass(frozen=True)
class Extension:
    """A feature that adds routers with their own prefix and/or a background service to the app."""

    name: str
    routers: Sequence[tuple[APIRouter, str]] = ()
    """``(router, prefix)`` pairs, e.g. ``(ws_router, "/ws/v1")``."""
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None
    """Started after the pool opens, stopped before it closes."""
    enabled: Callable[[Settings], bool] = field(default=lambda _settings: True)


def _discover(package: Any, attribute: str) -> list[Any]:
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        value = getattr(module, attribute, None)
        if value is not None:
            found.append(value)
    return found


#: Routers of ``teleconsult/api/routes/*.py``, included under ``/api/v1``.
ROUTERS: Final[list[APIRouter]] = _discover(routes_pkg, "router")


def discover_extensions() -> list[Extension]:
    """The ``extension`` objects of ``teleconsult/api/extensions/*.py``."""
    return _discover(extensions_pkg, "extension")


def create_app(settings: Settings, extensions: Sequence[Extension] | None = None) -> FastAPI:
    """Build the application (nothing connects until the lifespan starts)."""
    active = [e for e in (discover_extensions() if extensions is None else extensions) if e.enabled(settings)]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.uses_default_secret:
            log.warning("using the development default secret key; set TBIB_SECRET_KEY")
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.database_url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            open=False,
            name="tbib-api",
            check=check_writable,  # after a failover no request gets a dead or demoted connection
        )
        await pool.open(wait=False)
        app.state.pool = pool
        try:
            async with AsyncExitStack() as stack:
                for ext in active:
                    if ext.lifespan is not None:
                        log.info("starting extension %s", ext.name)
                        await stack.enter_async_context(ext.lifespan(app))
                yield
        finally:
            await pool.close()

    app = FastAPI(
        title="tbib",
        version="1",
        summary="Remote monitoring and teleconsultation with connected medical devices",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.extensions = [e.name for e in active]
    _install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    for ext in active:
        for router, prefix in ext.routers:
            app.include_router(router, prefix=prefix)

    @app.get("/healthz", tags=["health"], summary="Liveness and database reachability")
    async def healthz(request: Request) -> JSONResponse:
        pool: AsyncConnectionPool[Any] = request.app.state.pool
        try:
            async with pool.connection(timeout=2.0) as conn:
                await conn.execute("select 1")
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return JSONResponse({"status": "degraded", "database": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-CSRF-Token"],
        )
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.tls_enabled)
    return app


def _problem(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    """Map the package's exceptions to HTTP statuses (the only place that does)."""

    async def on_error(_request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, errors.LockedOutError):
            return _problem(429, str(exc), {"Retry-After": str(exc.retry_after_s)})
        if isinstance(exc, errors.AuthenticationError):
            return _problem(401, exc.reason, {"WWW-Authenticate": "Bearer"})
        if isinstance(exc, errors.AuthorizationError):
            return _problem(403, exc.reason)
        if isinstance(exc, errors.NotFoundError):
            return _problem(404, str(exc))
        if isinstance(exc, errors.ConflictError):
            return _problem(409, str(exc))
        log.error("unhandled %s", type(exc).__name__, exc_info=exc)
        return _problem(500, "internal error")

    async def on_database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        # the database is unreachable or failing over (docs/scale-out.md): temporary, the client may retry
        log.warning("database unavailable: %s", str(exc).strip()[:200])
        return _problem(503, "database unavailable, retry shortly", {"Retry-After": "2"})

    app.add_exception_handler(errors.TeleconsultError, on_error)
    app.add_exception_handler(psycopg.OperationalError, on_database_unavailable)
