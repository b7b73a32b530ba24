"""Authorization-matrix factories for the gateway/device admin routes (teleconsult/api/routes/gateways.py)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from teleconsult.security import provisioning


def _gateway(ctx: Any, *, pending_code: bool = False) -> str:
    gw = str(ctx.unique("gwm"))
    with psycopg.connect(ctx.seeded.dsn, autocommit=True) as conn:
        conn.execute("insert into gateways (id, patient_id) values (%s, %s)", (gw, ctx.patient_id))
        if pending_code:
            conn.execute(
                "insert into gateway_provisioning_codes (gateway_id, code_hash, expires_at)"
                " values (%s, %s, now() + interval '10 minutes')",
                (gw, provisioning.code_hash(provisioning.new_code())),
            )
    return gw


def gateway_id(ctx: Any) -> str:
    """A gateway bound to the patient under test."""
    return _gateway(ctx)


def revocable_gateway_id(ctx: Any) -> str:
    """A gateway with a pending provisioning code (so a revocation has something to end)."""
    return _gateway(ctx, pending_code=True)


def enrol_body(ctx: Any) -> dict[str, Any]:
    """A fresh gateway id for the patient under test."""
    return {"gateway_id": ctx.unique("gwn"), "patient_id": str(ctx.patient_id)}


def device_body(ctx: Any) -> dict[str, str]:
    """A device address."""
    return {"address": f"AA:BB:CC:{uuid.uuid4().hex[:2]}:{uuid.uuid4().hex[:2]}:01", "kind": "oximeter"}


def _device(ctx: Any) -> tuple[str, str]:
    gw = _gateway(ctx)
    with psycopg.connect(ctx.seeded.dsn, autocommit=True) as conn:
        row = conn.execute(
            "insert into devices (gateway_id, patient_id, address) values (%s, %s, 'AA:00') returning id",
            (gw, ctx.patient_id),
        ).fetchone()
    assert row is not None
    ctx._device = (gw, str(row[0]))
    return gw, str(row[0])


def device_gateway(ctx: Any) -> str:
    """The gateway of a freshly enrolled device (call before :func:`device_id`)."""
    return _device(ctx)[0]


def device_id(ctx: Any) -> str:
    """The device created by :func:`device_gateway` for this call."""
    return str(ctx._device[1])


def bad_code(ctx: Any) -> dict[str, str]:
    """A code nobody issued: refused (401) whoever calls."""
    return {"code": provisioning.new_code()}
