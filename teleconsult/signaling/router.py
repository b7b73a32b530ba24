"""HTTP surface of signaling: the websocket ``/ws/v1/signaling`` and the call pages under ``/consult/``.

The websocket needs no cookie: a client proves who it is with the join token in its first ``join`` frame, so a
cross-site page cannot ride on ambient credentials. The service lives on ``app.state.signaling``
(:class:`~teleconsult.signaling.service.SignalingService`), created by the app's lifespan (or a test).

Pages (static, no inline script: the app's CSP is ``'self'``):
- ``/consult/patient#token=...`` — the patient joins from a phone browser (camera + microphone).
- ``/consult/guest#invite=...`` — a guest of an invitation link (nurse, interpreter, family) redeems it and waits.
- ``/consult/doctor#token=...`` — a minimal doctor page (tests, benchmark, demo); the dashboard embeds ``call.js``.
- ``/consult/static/call.js`` — the ES module client (signaling + negotiation roles) for any page.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from fastapi import APIRouter, HTTPException, WebSocket
from fastapi.responses import Response

from teleconsult.signaling.service import SignalingService

WS_PATH: Final = "/signaling"
"""Under the ``/ws/v1`` prefix."""

_TYPES: Final = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
_PAGES: Final = {"patient": "patient.html", "doctor": "doctor.html", "guest": "guest.html"}
_ASSETS: Final = frozenset({"call.js", "patient.js", "doctor.js", "guest.js", "call.css"})

ws_router = APIRouter(tags=["signaling"])
pages_router = APIRouter(tags=["signaling"], include_in_schema=False)


@ws_router.websocket(WS_PATH)
async def signaling_socket(websocket: WebSocket) -> None:
    """One signaling connection (protocol: docs/teleconsultation.md)."""
    service: SignalingService = websocket.app.state.signaling
    await service.serve(websocket)


def _static(name: str) -> Response:
    data = resources.files("teleconsult.signaling").joinpath("static", name).read_bytes()
    suffix = name[name.rfind(".") :]
    return Response(data, media_type=_TYPES[suffix], headers={"Cache-Control": "no-cache"})


@pages_router.get("/consult/static/{name}")
async def consult_asset(name: str) -> Response:
    """Scripts and styles of the call pages."""
    if name not in _ASSETS:
        raise HTTPException(404)
    return _static(name)


@pages_router.get("/consult/{page}")
async def consult_page(page: str) -> Response:
    """The patient or doctor call page; the join token travels in the URL fragment (never sent to the server)."""
    if page not in _PAGES:
        raise HTTPException(404)
    return _static(_PAGES[page])
