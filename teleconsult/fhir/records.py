"""tbib's own records as the FHIR mapping sees them (frozen dataclasses; the store module fills them, tests build them).

They mirror the tables of ``docs/storage.md`` (``patients``, ``patient_identifiers``, ``devices``, ``gateways``,
``readings``, ``alerts``) without any I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """A row of ``patients`` plus its business identifiers ``(system, value)``."""

    id: uuid.UUID
    display_name: str
    birth_date: date | None = None
    sex: str | None = None
    identifiers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A row of ``devices`` (a BLE medical device enrolled to a gateway)."""

    id: uuid.UUID
    gateway_id: str
    patient_id: uuid.UUID | None
    address: str
    model: str | None = None
    serial: str | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    """A row of ``gateways`` (the home hub: the parent of its devices)."""

    id: str
    patient_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class ReadingRecord:
    """A row of ``readings`` (the contract of ARCHITECTURE.md)."""

    reading_id: uuid.UUID
    patient_id: uuid.UUID
    device_id: uuid.UUID | None
    metric: str
    value: float
    unit: str
    measured_at: datetime
    received_at: datetime | None = None
    group_id: uuid.UUID | None = None
    flags: Mapping[str, Any] | None = field(default=None, hash=False)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert that is not resolved (``state`` open or acknowledged)."""

    id: int
    patient_id: uuid.UUID
    rule: str
    severity: str
    state: str
    raised_at: datetime
    details: Mapping[str, Any] | None = field(default=None, hash=False)
