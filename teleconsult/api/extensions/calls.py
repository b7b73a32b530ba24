"""Calls started from the dashboard: :class:`~teleconsult.calls.service.CallService` on ``app.state.calls``.

Settings: ``mqtt_url`` (top level) and an optional ``[ext.calls]`` table: ``enabled`` (default true),
``ack_timeout_s`` (default 8: no event from the gateway within it -> ``offline``, reason ``no-answer``). The signing
key is derived from ``secret_key`` (:meth:`CommandSigner.from_secret`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from teleconsult.api.app import Extension
from teleconsult.calls.command import CommandSigner
from teleconsult.calls.service import CallService
from teleconsult.settings import Settings


class CallsExt(BaseModel):
    """``[ext.calls]``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    ack_timeout_s: float = Field(default=8.0, gt=0, le=120)


def ext_settings(settings: Settings) -> CallsExt:
    """The validated ``[ext.calls]`` table."""
    return CallsExt.model_validate(settings.ext.get("calls", {}))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the service (broker connection in the background)."""
    settings: Settings = app.state.settings
    signer = CommandSigner.from_secret(settings.secret_key.get_secret_value())
    service = CallService(
        settings.database_url, settings.mqtt_url, signer, ack_timeout_s=ext_settings(settings).ack_timeout_s
    )
    await service.start()
    app.state.calls = service
    try:
        yield
    finally:
        await service.stop()


extension = Extension(name="calls", lifespan=lifespan, enabled=lambda settings: ext_settings(settings).enabled)
