"""Pydantic building blocks for HTTP bodies and responses (trust boundary), shared by the routers.

- ``SafeText`` rejects NUL and other C0 control characters (PostgreSQL refuses NUL in text).
- ``UtcDatetime`` requires a timezone and normalizes to UTC (a naive time is ambiguous; out-of-range offsets are 422).
- ``DbInt`` is an int that fits PostgreSQL ``bigint``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Final

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from teleconsult.security.models import Role, User

_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError("datetime out of range") from exc


SafeText = Annotated[str, AfterValidator(_no_control)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
DbInt = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Username = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
Password = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_no_control)]


class ApiModel(BaseModel):
    """Base of request/response bodies: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class UserOut(ApiModel):
    """An account as the API shows it."""

    id: uuid.UUID
    username: str
    display_name: str
    role: Role
    patient_id: uuid.UUID | None
    disabled: bool
    totp_enabled: bool

    @classmethod
    def of(cls, user: User) -> UserOut:
        """From the domain value."""
        return cls(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            role=user.role,
            patient_id=user.patient_id,
            disabled=user.disabled,
            totp_enabled=user.totp_enabled,
        )
