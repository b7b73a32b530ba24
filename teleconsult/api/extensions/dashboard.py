"""The doctor dashboard: static app at ``/`` (dashboard/router.py) and its live feed ``/ws/v1/patients``."""

from __future__ import annotations

from dashboard.router import router as dashboard_router
from teleconsult.api.app import Extension
from teleconsult.api.live import lifespan, ws_router

extension = Extension(
    name="dashboard",
    routers=[(ws_router, "/ws/v1"), (dashboard_router, "")],
    lifespan=lifespan,
    enabled=lambda settings: bool(settings.ext.get("dashboard", {}).get("enabled", True)),
)
