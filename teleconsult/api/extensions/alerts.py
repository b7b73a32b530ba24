"""Alerts in the app: the engine leader service, the per-node hub, ``/ws/v1/alerts`` and ``/ws/v1/vitals``.

``/ws/v1/alerts[?last_event_id=N]`` (any authenticated account; frames only for the patients the account may see,
refreshed every ``refresh_s``; the subscription is audited):
- ``{"type": "hello", "last_event_id": N, "patients": n, "heartbeat_s": s}`` once;
- ``{"type": "alert", "id": N, "event": "raised|updated|cleared|escalated|acknowledged|resolved", "at": ...,
  "alert": {...alerts row...}}``; ids increase. With ``last_event_id`` the events after it are replayed from the
  store first, then live ones follow without gap or duplicate;
- ``{"type": "heartbeat", "at": ..., "last_event_id": N}`` every ``heartbeat_s``;
- ``{"type": "resync", "reason": ..., "last_event_id": N}`` then close 1013 when the client fell behind (bounded queue)
  or the replay is too long: reconnect with that id.

``/ws/v1/vitals?patient=<uuid>[&since=<ISO time>]`` (care team of that patient, audited): ``hello``, then
``{"type": "reading", "id": n, "patient_id", "metric", "value", "unit", "measured_at", "device_id"}`` with ``id``
increasing per connection; ``since`` (the newest ``measured_at`` seen) replays newer readings from the store first.
Live readings are the newest per (patient, metric) of each committed ingest batch. Heartbeats and resync as above.

Settings: ``[ext.alerts]`` (:class:`AlertsExt`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket, WebSocketException, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.websockets import WebSocketDisconnect

from teleconsult.alerts import store
from teleconsult.alerts.hub import TEXT, Hub, Subscriber
from teleconsult.alerts.model import Severity
from teleconsult.alerts.rules import EngineConfig
from teleconsult.alerts.service import EngineService, EngineThread
from teleconsult.alerts.trace import DeliveryTrace
from teleconsult.api.app import Extension
from teleconsult.api.deps import (
    DbPool,
    accept_websocket,
    audit,
    authenticate_websocket,
    authorize_websocket_patient,
    client_addr,
)
from teleconsult.security import audit as audit_log
from teleconsult.security import care_team
from teleconsult.security.models import User
from teleconsult.settings import Settings

log = logging.getLogger(__name__)

ws_router = APIRouter(tags=["alerts"])


class AlertsExt(BaseModel):
    """``[ext.alerts]``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    engine: bool = True
    """Contend for the engine leadership on this node (one node leads, the others take over if it dies)."""
    heartbeat_s: float = Field(default=15.0, gt=0)
    queue_size: int = Field(default=1000, ge=1)
    replay_limit: int = Field(default=10_000, ge=1)
    refresh_s: float = Field(default=60.0, gt=0)
    """Care-team set of an alerts socket is re-read this often."""
    escalate_high_s: float = Field(default=300.0, gt=0)
    escalate_medium_s: float = Field(default=900.0, gt=0)
    news2_freshness_s: float = Field(default=3600.0, gt=0)
    gateway_offline_s: float = Field(default=300.0, gt=0)
    """A gateway offline this long raises "gateway_offline" for its patients."""
    no_data_grace_s: float = Field(default=900.0, ge=0)
    """Added to a metric's expected interval before "no data" is raised."""
    gateway_status: bool = True
    """Subscribe to the gateways' status topics on ``mqtt_url`` (leader only)."""
    trace_file: Path | None = None
    """Append per-event delivery timings of this node's hub to this file (:mod:`teleconsult.alerts.trace`; for
    ``tbib bench alerts``). Off by default."""


def ext_settings(settings: Settings) -> AlertsExt:
    """The validated ``[ext.alerts]`` table."""
    return AlertsExt.model_validate(settings.ext.get("alerts", {}))


def engine_config(ext: AlertsExt) -> EngineConfig:
    """Engine settings from the extension's table."""
    return EngineConfig(
        news2_freshness=timedelta(seconds=ext.news2_freshness_s),
        gateway_offline_after=timedelta(seconds=ext.gateway_offline_s),
        no_data_grace=timedelta(seconds=ext.no_data_grace_s),
        escalate_after={
            Severity.HIGH: timedelta(seconds=ext.escalate_high_s),
            Severity.MEDIUM: timedelta(seconds=ext.escalate_medium_s),
        },
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the hub (every node) and the engine service (leader election), stop them on exit."""
    settings: Settings = app.state.settings
    ext = ext_settings(settings)
    hub = Hub(settings.database_url, trace=None if ext.trace_file is None else DeliveryTrace(ext.trace_file))
    app.state.alert_hub = hub
    app.state.alerts_ext = ext
    tasks = [asyncio.create_task(hub.run(), name="alert-hub")]
    service: EngineService | None = None
    runner: EngineThread | None = None
    if ext.engine:
        service = EngineService(
            settings.database_url,
            engine_config(ext),
            mqtt_url=settings.mqtt_url if ext.gateway_status else None,
        )
        runner = EngineThread(service)  # its own thread and loop: never between two sends of this loop
        runner.start()
    app.state.alert_engine = service
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.ready.wait(), 10.0)
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if runner is not None:
            await asyncio.to_thread(runner.stop)


async def _accessible(pool: DbPool, user: User) -> set[uuid.UUID]:
    async with pool.connection() as conn:
        return set(await care_team.accessible_patient_ids(conn, user))


async def _pump(
    websocket: WebSocket,
    sub: Subscriber,
    ext: AlertsExt,
    position: Callable[[], dict[str, Any]],
    send: Callable[[dict[str, Any]], Awaitable[bool]],
    refresh: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Send queued frames and heartbeats until the client leaves or must resync; reads (and drops) client frames."""

    async def read() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # the client may send pings or anything else: ignored

    async def write() -> None:
        while True:
            frame = await sub.get(ext.heartbeat_s)  # no task per frame (cheap with many sockets)
            if frame is None:
                await websocket.send_json({"type": "heartbeat", "at": datetime.now(UTC).isoformat(), **position()})
                continue
            if frame.get("type") == "resync":
                await websocket.send_json({**frame, **position()})
                await websocket.close(code=status.WS_1013_TRY_AGAIN_LATER)
                return
            await send(frame)

    async def refresher() -> None:  # the care-team query never holds up this socket's sends
        assert refresh is not None
        while True:
            await asyncio.sleep(ext.refresh_s)
            await refresh()

    # One reader, one writer (and a refresher) per socket; whichever ends first (client gone, resync, send failure)
    # ends all.
    tasks = [asyncio.create_task(read()), asyncio.create_task(write())]
    if refresh is not None:
        tasks.append(asyncio.create_task(refresher()))
    try:
        await asyncio.wait(tasks, return_when=FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task


@ws_router.websocket("/alerts")
async def alerts_socket(websocket: WebSocket) -> None:
    """Alert events of the caller's patients, with replay from ``last_event_id``."""
    app = websocket.app
    hub: Hub = app.state.alert_hub
    ext: AlertsExt = app.state.alerts_ext
    pool: DbPool = app.state.pool
    raw_last = websocket.query_params.get("last_event_id")
    if raw_last is not None and not raw_last.isdigit():
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="last_event_id must be an integer")
    user = await authenticate_websocket(websocket)
    patients = await _accessible(pool, user)
    await audit(
        pool,
        user,
        action="subscribe",
        resource="WS /ws/v1/alerts",
        outcome=audit_log.ALLOWED,
        client_addr=client_addr(websocket),
        detail={"patients": len(patients), "last_event_id": raw_last},
    )
    await accept_websocket(websocket)
    sub = hub.subscribe_alerts(patients, ext.queue_size)
    try:
        last = int(raw_last) if raw_last is not None else hub.cursor
        backlog: list[store.StoredEvent] = []
        if raw_last is not None:
            async with pool.connection() as conn:
                backlog = await store.events_since(conn, last, patient_ids=list(patients), limit=ext.replay_limit + 1)
        if len(backlog) > ext.replay_limit:
            sub.resync("replay too long")
            backlog = []
        await websocket.send_json(
            {"type": "hello", "last_event_id": last, "patients": len(patients), "heartbeat_s": ext.heartbeat_s}
        )
        for ev in backlog:
            await websocket.send_json(ev.message())
            last = ev.id

        async def send(frame: dict[str, Any]) -> bool:
            nonlocal last
            if int(frame["id"]) <= last:
                return False  # already replayed
            await websocket.send_text(frame[TEXT])
            last = int(frame["id"])
            hub.sent(last)
            return True

        async def refresh() -> None:
            hub.set_patients(sub, await _accessible(pool, user))

        await _pump(websocket, sub, ext, lambda: {"last_event_id": last}, send, refresh)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(sub)


@ws_router.websocket("/vitals")
async def vitals_socket(websocket: WebSocket) -> None:
    """Live readings of one patient (care team only)."""
    app = websocket.app
    hub: Hub = app.state.alert_hub
    ext: AlertsExt = app.state.alerts_ext
    pool: DbPool = app.state.pool
    try:
        patient = uuid.UUID(websocket.query_params.get("patient", ""))
        raw_since = websocket.query_params.get("since")
        since = datetime.fromisoformat(raw_since) if raw_since else None
    except ValueError as exc:
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="bad patient or since") from exc
    if since is not None and since.tzinfo is None:
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="since must have a time zone")
    user = await authenticate_websocket(websocket)
    await authorize_websocket_patient(websocket, user, patient)
    await accept_websocket(websocket)
    sub = hub.subscribe_vitals(patient, ext.queue_size)
    seq = 0
    try:
        backlog: list[tuple[Any, ...]] = []
        if since is not None:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "select metric, value, unit, measured_at, device_id from readings"
                    " where patient_id = %s and measured_at > %s order by measured_at limit %s",
                    (patient, since, ext.replay_limit),
                )
                backlog = list(await cur.fetchall())
        await websocket.send_json({"type": "hello", "patient_id": str(patient), "heartbeat_s": ext.heartbeat_s})
        replayed: set[tuple[str, str]] = set()
        for metric, value, unit, measured_at, device in backlog:
            seq += 1
            replayed.add((metric, measured_at.isoformat()))
            await websocket.send_json(
                {
                    "type": "reading",
                    "id": seq,
                    "patient_id": str(patient),
                    "metric": metric,
                    "value": value,
                    "unit": unit,
                    "measured_at": measured_at.isoformat(),
                    "device_id": None if device is None else str(device),
                    "replay": True,
                }
            )

        async def send(frame: dict[str, Any]) -> bool:
            nonlocal seq
            if (frame["metric"], frame["measured_at"]) in replayed:
                return False  # committed while we replayed: already sent
            seq += 1
            await websocket.send_json({**frame, "id": seq})
            return True

        def position() -> dict[str, Any]:
            return {"last_id": seq}

        await _pump(websocket, sub, ext, position, send)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(sub)


extension = Extension(
    name="alerts",
    routers=[(ws_router, "/ws/v1")],
    lifespan=lifespan,
    enabled=lambda settings: ext_settings(settings).enabled,
)
