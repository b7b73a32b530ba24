"""Teleconsultation signaling in the app: ``/ws/v1/signaling``, the call pages under ``/consult/``, the record sink.

Settings: ``turn_urls``, ``turn_secret``, ``stun_urls`` (top level) and an optional ``[ext.signaling]`` table
(:class:`SignalingExt`). The join-token key is derived from ``secret_key`` (HMAC-SHA256 with a fixed label), so it
never equals the access-token key and rotates with it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field

from teleconsult.api.app import Extension
from teleconsult.errors import ConfigError
from teleconsult.security import audit as audit_log
from teleconsult.settings import Settings
from teleconsult.signaling import record as consult_record
from teleconsult.signaling.core import SignalingConfig
from teleconsult.signaling.rooms import Record
from teleconsult.signaling.roomstore import PgRoomStore
from teleconsult.signaling.router import pages_router, ws_router
from teleconsult.signaling.service import SignalingService
from teleconsult.signaling.turn import IceConfig

log = logging.getLogger(__name__)

TOKEN_KEY_LABEL = b"tbib signaling join token v1"


class SignalingExt(BaseModel):
    """``[ext.signaling]``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    grace_s: float = Field(default=30.0, gt=0, le=600)
    token_ttl_s: int = Field(default=600, ge=30, le=24 * 3600)
    turn_ttl_s: int = Field(default=7200, ge=60, le=7 * 24 * 3600)
    rate_per_second: float = Field(default=20.0, gt=0)
    rate_burst: float = Field(default=60.0, ge=1)
    cluster: bool = True
    """Keep rooms in PostgreSQL (``signaling_rooms``) so any API node serves any room; ``false``: in this process."""


def ext_settings(settings: Settings) -> SignalingExt:
    """The validated ``[ext.signaling]`` table."""
    return SignalingExt.model_validate(settings.ext.get("signaling", {}))


def signaling_config(settings: Settings) -> SignalingConfig:
    """The core's configuration from the server settings."""
    ext = ext_settings(settings)
    if settings.turn_urls and settings.turn_secret is None:
        raise ConfigError("turn_urls is set but turn_secret is not (coturn use-auth-secret needs the shared secret)")
    key = hmac.new(settings.secret_key.get_secret_value().encode(), TOKEN_KEY_LABEL, hashlib.sha256).digest()
    ice = IceConfig(
        turn_urls=tuple(settings.turn_urls),
        turn_secret=settings.turn_secret.get_secret_value().encode() if settings.turn_secret else b"",
        stun_urls=tuple(settings.stun_urls),
        ttl=timedelta(seconds=ext.turn_ttl_s),
    )
    return SignalingConfig(
        token_key=key,
        ice=ice,
        grace=timedelta(seconds=ext.grace_s),
        rate_per_second=ext.rate_per_second,
        rate_burst=ext.rate_burst,
    )


def record_sink(pool: AsyncConnectionPool[Any]) -> Any:
    """Store each room event in the consultation record and the audit log."""

    async def sink(record: Record) -> None:
        async with pool.connection() as conn:
            stored = await consult_record.store_event(conn, record)
            if not stored:
                return
            row = await conn.execute(
                "select patient_id from consultations where id = %s", (uuid.UUID(record.consultation_id),)
            )
            found = await row.fetchone()
            event = audit_log.AuditEvent(
                action=audit_log.WRITE,
                resource="WS /ws/v1/signaling",
                outcome=audit_log.DENIED if record.kind.value == "denied" else audit_log.ALLOWED,
                actor_username=record.by or record.subject,
                patient_id=found[0] if found else None,
                detail={
                    "consultation_id": record.consultation_id,
                    "event": record.kind.value,
                    "seat": record.seat.value if record.seat else None,
                    "subject": record.subject,
                    "by": record.by,
                },
            )
            await audit_log.append(conn, event)

    return sink


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the service on ``app.state.signaling``; close every socket on shutdown."""
    settings: Settings = app.state.settings
    store = PgRoomStore(app.state.pool, settings.database_url) if ext_settings(settings).cluster else None
    service = SignalingService(signaling_config(settings), on_record=record_sink(app.state.pool), store=store)
    await service.start()
    app.state.signaling = service
    app.state.signaling_token_ttl = timedelta(seconds=ext_settings(settings).token_ttl_s)
    try:
        yield
    finally:
        await service.aclose()


extension = Extension(
    name="signaling",
    routers=[(ws_router, "/ws/v1"), (pages_router, "")],
    lifespan=lifespan,
    enabled=lambda settings: ext_settings(settings).enabled,
)
