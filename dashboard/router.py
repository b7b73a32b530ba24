"""Serves the dashboard: ``/`` (index.html), ``/app/...`` (its modules, styles, translations) and ``/vendor/uplot/...``.

The files are static and public (no patient data: everything clinical comes from the authenticated API). uPlot is
installed from npm by ``make setup`` into ``node_modules/`` (not committed); ``TBIB_DASHBOARD_VENDOR_DIR`` overrides
where to find it. Only known file types under ``dashboard/static`` are served; nothing outside it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse, Response

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
_REPO_NODE_MODULES: Final = Path(__file__).resolve().parents[1] / "node_modules"
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".wav": "audio/wav",
}
#: uPlot files the dashboard loads.
VENDOR_FILES: Final = frozenset({"uPlot.esm.js", "uPlot.min.css", "uPlot.iife.min.js"})

router = APIRouter(include_in_schema=False)


def vendor_dir() -> Path:
    """Where uPlot's ``dist`` files are."""
    override = os.environ.get("TBIB_DASHBOARD_VENDOR_DIR")
    return Path(override) if override else _REPO_NODE_MODULES / "uplot" / "dist"


def _file(path: Path) -> Response:
    media = _TYPES.get(path.suffix)
    if media is None or not path.is_file():
        raise HTTPException(404)
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


@router.get("/")
async def index() -> Response:
    """The single page (hash routes: #/patients, #/patient/<id>, #/consult/<id>, #/me for a patient account)."""
    return _file(STATIC_DIR / "index.html")


@router.get("/patient")
async def patient_space() -> Response:
    """The patient's own space: a short address to type on a phone (the page is ``/#/me``)."""
    return RedirectResponse("/#/me", status_code=303)


@router.get("/app/{path:path}")
async def asset(path: str) -> Response:
    """Modules, styles and translations of the dashboard."""
    target = (STATIC_DIR / path).resolve()
    if not target.is_relative_to(STATIC_DIR):
        raise HTTPException(404)
    return _file(target)


@router.get("/vendor/uplot/{name}")
async def uplot(name: str) -> Response:
    """uPlot from node_modules (run ``make setup`` or ``npm install`` when this is 404)."""
    if name not in VENDOR_FILES:
        raise HTTPException(404)
    return _file(vendor_dir() / name)
