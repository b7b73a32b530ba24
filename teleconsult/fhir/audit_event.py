"""tbib audit rows -> FHIR R4 ``AuditEvent`` (pure, no I/O).

The audit log (docs/security.md: append-only, hash-chained) stays the source of truth; this is a read-only view of it
for an admin (``GET /fhir/r4/AuditEvent?patient=<id>``). ``id`` = the audit row id; ``action`` R for reads and
exports, U for writes (imports), E otherwise; ``outcome`` 0 (allowed) or 4 (denied); the agent is the tbib account
(or ``cli:<os user>``), with its role and client address; the entity is the patient, described by the route or
command, with the row's ``detail`` as JSON.
"""

from __future__ import annotations

import json
from typing import Any, Final

from teleconsult.fhir.observation import fhir_instant
from teleconsult.fhir.terminology import BASE
from teleconsult.security.audit import AuditRow

AUDIT_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/audit-event-type"
USER_SYSTEM: Final = f"{BASE}/sid/user"
_ACTIONS: Final = {"read": "R", "export": "R", "write": "U", "create": "C", "delete": "D"}


def audit_event_resource(row: AuditRow) -> dict[str, Any]:
    """One audit row as an ``AuditEvent``."""
    ev = row.event
    who: dict[str, Any] = {"display": ev.actor_username or "anonymous"}
    if ev.actor_id is not None:
        who["identifier"] = {"system": USER_SYSTEM, "value": str(ev.actor_id)}
    agent: dict[str, Any] = {"who": who, "requestor": True}
    if ev.actor_role:
        agent["role"] = [{"text": ev.actor_role}]
    if ev.client_addr:
        agent["network"] = {"address": ev.client_addr, "type": "2"}  # 2 = IP address
    entity: dict[str, Any] = {"description": ev.resource}
    if ev.patient_id is not None:
        entity["what"] = {"reference": f"Patient/{ev.patient_id}"}
    if ev.detail:
        entity["detail"] = [{"type": "detail", "valueString": json.dumps(dict(ev.detail), sort_keys=True)}]
    return {
        "resourceType": "AuditEvent",
        "id": str(row.id),
        "type": {"system": AUDIT_TYPE_SYSTEM, "code": "rest", "display": "RESTful Operation"},
        "action": _ACTIONS.get(ev.action, "E"),
        "recorded": fhir_instant(row.occurred_at),
        "outcome": "0" if ev.outcome == "allowed" else "4",
        "outcomeDesc": ev.outcome,
        "agent": [agent],
        "source": {"observer": {"display": "tbib"}},
        "entity": [entity],
    }
