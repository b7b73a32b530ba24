"""The pydantic models of reading batch payload v1 (documentation, JSON schema, and the slow path that explains *why*
a message-level check failed); :mod:`.payload` judges messages without them and re-exports them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

UUID_PATTERN: Final = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class DeviceV1(BaseModel):
    """``readings[].device``."""

    model_config = ConfigDict(extra="allow")
    address: str = Field(min_length=1, max_length=64)
    model: str | None = None
    serial: str | None = None


class ReadingV1(BaseModel):
    """One element of ``readings``."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(pattern=UUID_PATTERN)
    device: DeviceV1
    metric: str
    value: float = Field(allow_inf_nan=False)
    unit: str
    measured_at: datetime
    device_time: str | None = None
    received_at: datetime | None = None
    group: str | None = Field(default=None, pattern=UUID_PATTERN)
    flags: dict[str, Any] | None = None


class BatchV1(BaseModel):
    """Reading batch payload v1."""

    model_config = ConfigDict(extra="allow")
    v: Literal[1]
    gateway_id: str
    sent_at: datetime
    readings: list[ReadingV1]


def explain(payload: bytes) -> str:
    """The pydantic account of why ``payload`` is not a valid batch (slow path, for humans), or ``"valid"``."""
    try:
        BatchV1.model_validate_json(payload)
    except ValidationError as exc:
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
    return "valid"
