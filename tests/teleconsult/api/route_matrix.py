"""The authorization matrix: one entry per route of the app, saying who may call it.

``test_authorization_matrix.py`` builds the app, lists ``app.routes`` and fails when a route has no entry here (or an
entry names a route that no longer exists). Then every route is called by every caller — anonymous, admin, doctor,
nurse, pharmacist, patient — twice: for the patient they are assigned to (``assigned=True``: staff on p1's care team,
the patient's own record) and for another patient (``assigned=False``), and the status must be the expected one.

To add your route: add a line to :data:`MATRIX` keyed by ``(METHOD, path template)`` — use ``"WS"`` as the method for
websocket routes — with a policy (:func:`public`, :func:`authenticated`, :func:`staff_only`, :func:`admin_only`,
:func:`care_team`, :func:`patient_self`, or your own ``(caller, assigned) -> status``) and, when needed, factories
for the body, the query, and path parameters other than ``patient_id`` (which the runner fills in). A factory gets
the :class:`Ctx` (seeded ids, helpers to create throwaway users/assignments). Websocket entries give ``ws_probe``:
``probe(ctx, url, token, patient_id) -> status`` that connects (``token`` is None for anonymous) and maps the outcome
to an HTTP-like status (e.g. 200 subscribed, 401 unauthenticated, 403 refused).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.teleconsult.alerts import matrix_support as alerts
from tests.teleconsult.api.helpers import Seeded
from tests.teleconsult.fhir import matrix_support as fhir
from tests.teleconsult.prescriptions import matrix_support as rx
from tests.teleconsult.security import gateway_matrix_support as gw
from tests.teleconsult.signaling import matrix_support as consult

CALLERS = ("anonymous", "admin", "doctor", "nurse", "pharmacist", "patient")
STAFF = frozenset({"admin", "doctor", "nurse", "pharmacist"})

Policy = Callable[[str, bool], int]


@dataclass
class Ctx:
    """What factories can use."""

    seeded: Seeded
    caller: str
    assigned: bool
    patient_id: uuid.UUID
    base_url: str
    _n: list[int] = field(default_factory=lambda: [0])

    def unique(self, stem: str) -> str:
        self._n[0] += 1
        return f"{stem}-{uuid.uuid4().hex[:10]}"

    def throwaway_user(self, role: str = "nurse") -> uuid.UUID:
        return self.seeded.add_user(self.unique("tmp"), role)

    def throwaway_assignment(self) -> uuid.UUID:
        return self.seeded.assign(self.throwaway_user(), self.patient_id)


@dataclass(frozen=True)
class Entry:
    """How to call one route and what each caller gets."""

    policy: Policy
    body: Callable[[Ctx], Any] | None = None
    query: Callable[[Ctx], dict[str, str]] | None = None
    params: dict[str, Callable[[Ctx], str]] = field(default_factory=dict)
    own_session: bool = False
    """Log the caller in afresh for this call (for routes that end the session)."""
    ws_probe: Callable[[Ctx, str, str | None, uuid.UUID], int] | None = None
    gateway: Callable[[bool], int] | None = None
    """Status for a gateway's broker credential (HTTP Basic ``gateway_id:secret``), the gateway being bound to the
    patient under test (True) or to another one (False). Required on every ``/fhir/r4`` route, the only place that
    accepts it (``test_gateway_matrix``)."""


# --- policies -------------------------------------------------------------------------------------------------------


def public(ok: int = 200) -> Policy:
    """Anyone, even anonymous."""
    return lambda caller, assigned: ok


def authenticated(ok: int = 200) -> Policy:
    """Any logged-in account."""
    return lambda caller, assigned: 401 if caller == "anonymous" else ok


def staff_only(ok: int = 200) -> Policy:
    """Any account but patients."""
    return lambda caller, assigned: 401 if caller == "anonymous" else (ok if caller in STAFF else 403)


def admin_only(ok: int = 200) -> Policy:
    """Admins (whether assigned or not: account management is not clinical data)."""
    return lambda caller, assigned: 401 if caller == "anonymous" else (ok if caller == "admin" else 403)


def care_team(ok: int = 200) -> Policy:
    """Patient data: staff (admins included) on the care team, or the patient themself. Never a pharmacist (issue 18):
    the seeded pharmacist has a care-team row for p1, which grants nothing."""
    return lambda caller, assigned: (
        401 if caller == "anonymous" else (ok if assigned and caller != "pharmacist" else 403)
    )


def patient_self(ok: int = 200) -> Policy:
    """Only the patient themself."""
    return lambda caller, assigned: 401 if caller == "anonymous" else (ok if caller == "patient" and assigned else 403)


def gateway_import(ok: int = 200) -> Callable[[bool], int]:
    """A gateway writes only for the patient bound to it."""
    return lambda assigned: ok if assigned else 403


def gateway_status(status: int) -> Callable[[bool], int]:
    """The same status whoever the gateway is bound to (403: gateways never read; 200 public, 404 unknown path)."""
    return lambda assigned: status


# --- the matrix -----------------------------------------------------------------------------------------------------


def _login_body(ctx: Ctx) -> dict[str, str]:
    from tests.teleconsult.api.helpers import PASSWORD

    return {"username": "m-doctor", "password": PASSWORD}


def _refresh_body(ctx: Ctx) -> dict[str, str]:
    import httpx

    from tests.teleconsult.api.helpers import PASSWORD

    r = httpx.post(f"{ctx.base_url}/api/v1/auth/login", json={"username": "m-nurse", "password": PASSWORD})
    return {"refresh_token": r.json()["refresh_token"]}


def _dashboard_feed_probe(ctx: Ctx, url: str, token: str | None, patient_id: uuid.UUID) -> int:
    """/ws/v1/patients (issue 9): 200 when the hello frame arrives, 401 without credentials, 403 when refused."""
    import json

    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    try:
        with connect(url if token is None else f"{url}?token={token}", open_timeout=10) as ws:
            if token is None:
                ws.send(json.dumps({"type": "auth", "token": "not-a-token"}))
            return 200 if json.loads(ws.recv(timeout=10)).get("type") == "hello" else 500
    except WebSocketException:
        return 401 if token is None else 403


MATRIX: dict[tuple[str, str], Entry] = {
    # infrastructure
    ("GET", "/healthz"): Entry(public()),
    ("GET", "/openapi.json"): Entry(public()),
    ("GET", "/docs"): Entry(public()),
    ("GET", "/docs/oauth2-redirect"): Entry(public()),
    # auth (issue 6)
    ("POST", "/api/v1/auth/login"): Entry(public(), body=_login_body),
    ("POST", "/api/v1/auth/refresh"): Entry(public(), body=_refresh_body),
    ("POST", "/api/v1/auth/logout"): Entry(authenticated(204), own_session=True),
    ("GET", "/api/v1/auth/me"): Entry(authenticated()),
    ("POST", "/api/v1/auth/totp/setup"): Entry(staff_only()),
    ("POST", "/api/v1/auth/totp/enable"): Entry(staff_only(409), body=lambda ctx: {"code": "000000"}),
    # accounts (issue 6)
    ("GET", "/api/v1/users"): Entry(admin_only()),
    ("POST", "/api/v1/users"): Entry(
        admin_only(201), body=lambda ctx: {"username": ctx.unique("u"), "password": "long-enough-pw", "role": "nurse"}
    ),
    ("POST", "/api/v1/users/{user_id}/disable"): Entry(
        admin_only(), params={"user_id": lambda ctx: str(ctx.throwaway_user())}
    ),
    ("POST", "/api/v1/users/{user_id}/enable"): Entry(
        admin_only(), params={"user_id": lambda ctx: str(ctx.throwaway_user())}
    ),
    # care team (issue 6)
    ("GET", "/api/v1/care-team"): Entry(admin_only()),
    ("POST", "/api/v1/care-team"): Entry(
        admin_only(201),
        body=lambda ctx: {"clinician_id": str(ctx.throwaway_user()), "patient_id": str(ctx.patient_id)},
    ),
    ("POST", "/api/v1/care-team/{assignment_id}/end"): Entry(
        admin_only(), params={"assignment_id": lambda ctx: str(ctx.throwaway_assignment())}
    ),
    ("GET", "/api/v1/care-team/mine"): Entry(staff_only()),
    # gateway and device enrolment (issue 19 item 6): factories in tests/teleconsult/security/gateway_matrix_support.py
    ("GET", "/api/v1/admin/patients"): Entry(admin_only()),
    ("POST", "/api/v1/admin/patients"): Entry(admin_only(201), body=lambda ctx: {"display_name": "Nouveau Patient"}),
    ("GET", "/api/v1/gateways"): Entry(admin_only()),
    ("POST", "/api/v1/gateways"): Entry(admin_only(201), body=gw.enrol_body),
    ("POST", "/api/v1/gateways/provision"): Entry(lambda caller, assigned: 401, body=gw.bad_code),
    ("POST", "/api/v1/gateways/{gateway_id}/revoke"): Entry(
        admin_only(), params={"gateway_id": gw.revocable_gateway_id}
    ),
    ("GET", "/api/v1/gateways/{gateway_id}/devices"): Entry(admin_only(), params={"gateway_id": gw.gateway_id}),
    ("POST", "/api/v1/gateways/{gateway_id}/devices"): Entry(
        admin_only(201), body=gw.device_body, params={"gateway_id": gw.gateway_id}
    ),
    ("POST", "/api/v1/gateways/{gateway_id}/devices/{device_id}/unenrol"): Entry(
        admin_only(), params={"gateway_id": gw.device_gateway, "device_id": gw.device_id}
    ),
    # consent and access log (issue 6)
    ("GET", "/api/v1/patients/{patient_id}/consents"): Entry(care_team()),
    ("POST", "/api/v1/patients/{patient_id}/consents"): Entry(
        care_team(201), body=lambda ctx: {"purpose": "remote_monitoring", "granted": True}
    ),
    ("GET", "/api/v1/patients/{patient_id}/access-log"): Entry(patient_self()),
    # the patient's own space (issue 19 item 4)
    ("GET", "/api/v1/patients/{patient_id}/space"): Entry(patient_self()),
    # teleconsultation (issue 8): factories and probe in tests/teleconsult/signaling/matrix_support.py
    ("POST", "/api/v1/patients/{patient_id}/consultations"): Entry(
        consult.create_policy, body=consult.consent_and_body
    ),
    ("GET", "/api/v1/patients/{patient_id}/consultations"): Entry(care_team()),
    ("POST", "/api/v1/patients/{patient_id}/consultations/{consultation_id}/join-token"): Entry(
        consult.join_token_policy, body=consult.join_token_body, params={"consultation_id": consult.consultation_id}
    ),
    # invitation links (issue 19 item 3): only the consultation's doctor; redeeming needs the secret, not a login
    ("POST", "/api/v1/patients/{patient_id}/consultations/{consultation_id}/invites"): Entry(
        consult.doctor_only(201), body=consult.invite_body, params={"consultation_id": consult.consultation_id}
    ),
    ("GET", "/api/v1/patients/{patient_id}/consultations/{consultation_id}/invites"): Entry(
        consult.doctor_only(200), params={"consultation_id": consult.consultation_id}
    ),
    ("DELETE", "/api/v1/patients/{patient_id}/consultations/{consultation_id}/invites/{invite_id}"): Entry(
        consult.doctor_only(404),
        params={"consultation_id": consult.consultation_id, "invite_id": consult.random_id},
    ),
    ("POST", "/api/v1/invites/redeem"): Entry(lambda caller, assigned: 401, body=consult.bad_secret),
    # calls started from the dashboard (issue 19 item 2): only the consultation's doctor rings the gateway
    ("POST", "/api/v1/patients/{patient_id}/consultations/{consultation_id}/call"): Entry(
        lambda caller, assigned: 401 if caller == "anonymous" else (200 if caller == "doctor" and assigned else 403),
        params={"consultation_id": consult.consultation_id},
    ),
    ("GET", "/api/v1/calls/command-key"): Entry(public()),
    ("WS", "/ws/v1/signaling"): Entry(public(), ws_probe=consult.signaling_probe),
    ("GET", "/consult/{page}"): Entry(public(), params={"page": lambda ctx: "patient"}),
    ("GET", "/consult/static/{name}"): Entry(public(), params={"name": lambda ctx: "call.js"}),
    # dashboard and clinician patient views (issue 9)
    ("GET", "/"): Entry(public()),
    ("GET", "/patient"): Entry(public(303)),
    ("GET", "/app/{path:path}"): Entry(public(), params={"path": lambda ctx: "js/app.js"}),
    ("GET", "/vendor/uplot/{name}"): Entry(public(), params={"name": lambda ctx: "uPlot.min.css"}),
    ("WS", "/ws/v1/patients"): Entry(staff_only(), ws_probe=_dashboard_feed_probe),
    ("GET", "/api/v1/patients"): Entry(staff_only()),
    ("GET", "/api/v1/patients/alerts"): Entry(staff_only()),
    ("GET", "/api/v1/patients/{patient_id}"): Entry(care_team()),
    ("GET", "/api/v1/patients/{patient_id}/alerts"): Entry(care_team()),
    ("GET", "/api/v1/patients/{patient_id}/history"): Entry(care_team(), query=lambda ctx: {"metric": "spo2"}),
    ("GET", "/api/v1/patients/{patient_id}/summary"): Entry(care_team()),
    ("GET", "/api/v1/patients/{patient_id}/readings.csv"): Entry(care_team()),
    ("PUT", "/api/v1/patients/{patient_id}/consultation-notes/{consultation_id}"): Entry(
        lambda caller, assigned: (
            401 if caller == "anonymous" else (200 if assigned and caller in STAFF - {"pharmacist"} else 403)
        ),
        body=lambda ctx: {"text": "Patient stable."},
        params={"consultation_id": consult.consultation_id},
    ),
    ("GET", "/api/v1/patients/{patient_id}/consultation-notes/{consultation_id}"): Entry(
        care_team(), params={"consultation_id": consult.consultation_id}
    ),
    # e-prescriptions (issue 18): factories and policies in tests/teleconsult/prescriptions/matrix_support.py
    ("GET", "/api/v1/formulary"): Entry(staff_only(), query=lambda ctx: {"q": "amox"}),
    ("GET", "/api/v1/patients/{patient_id}/allergies"): Entry(care_team()),
    ("PUT", "/api/v1/patients/{patient_id}/allergies"): Entry(rx.writer_on_team, body=lambda ctx: {"allergies": []}),
    ("POST", "/api/v1/patients/{patient_id}/prescriptions/check"): Entry(rx.doctor_on_team(), body=rx.draft_body),
    ("POST", "/api/v1/patients/{patient_id}/prescriptions"): Entry(rx.doctor_on_team(201), body=rx.draft_body),
    ("GET", "/api/v1/patients/{patient_id}/prescriptions"): Entry(care_team()),
    ("GET", "/api/v1/patients/{patient_id}/dispenses"): Entry(care_team()),
    ("GET", "/api/v1/prescriptions/{prescription_id}"): Entry(
        care_team(), params={"prescription_id": rx.prescription_id}
    ),
    ("POST", "/api/v1/prescriptions/{prescription_id}/cancel"): Entry(
        rx.doctor_on_team(), body=lambda ctx: {"reason": "erreur"}, params={"prescription_id": rx.prescription_id}
    ),
    ("POST", "/api/v1/prescriptions/{prescription_id}/revise"): Entry(
        rx.doctor_on_team(201), body=rx.draft_body, params={"prescription_id": rx.prescription_id}
    ),
    **{
        ("GET", f"/api/v1/prescriptions/{{prescription_id}}/{leaf}"): Entry(
            rx.prescriber_or_patient, params={"prescription_id": rx.prescription_id}
        )
        for leaf in ("access-code", "ordonnance.html", "ordonnance.pdf", "qr.svg")
    },
    ("POST", "/api/v1/pharmacy/lookup"): Entry(rx.pharmacist_only(), body=rx.lookup_body),
    ("POST", "/api/v1/pharmacy/prescriptions/{prescription_id}/dispense"): Entry(
        rx.pharmacist_only(201), body=rx.dispense_body, params={"prescription_id": rx.prescription_id}
    ),
    ("GET", "/api/v1/pharmacy/me"): Entry(rx.pharmacist_only(), query=rx.no_query_after_setup),
    ("GET", "/api/v1/pharmacies"): Entry(admin_only()),
    ("POST", "/api/v1/pharmacies"): Entry(admin_only(201), body=lambda ctx: {"name": "Pharmacie Test", "city": "Fès"}),
    ("POST", "/api/v1/pharmacies/{pharmacy_id}/members"): Entry(
        admin_only(), body=rx.pharmacist_user, params={"pharmacy_id": rx.pharmacy_id}
    ),
    ("PUT", "/api/v1/practitioners/{user_id}"): Entry(
        admin_only(), body=lambda ctx: {"registration_number": "INPE 1"}, params={"user_id": rx.doctor_user}
    ),
    # alerts (issue 7): factories and probes in tests/teleconsult/alerts/matrix_support.py
    ("GET", "/api/v1/alerts/{alert_id}"): Entry(care_team(), params={"alert_id": alerts.alert_id}),
    ("POST", "/api/v1/alerts/{alert_id}/acknowledge"): Entry(
        alerts.clinician_policy, params={"alert_id": alerts.alert_id}
    ),
    ("POST", "/api/v1/alerts/{alert_id}/resolve"): Entry(alerts.clinician_policy, params={"alert_id": alerts.alert_id}),
    ("PUT", "/api/v1/patients/{patient_id}/alert-profile"): Entry(alerts.clinician_policy, body=lambda ctx: {}),
    ("WS", "/ws/v1/alerts"): Entry(authenticated(), ws_probe=alerts.alerts_probe),
    ("WS", "/ws/v1/vitals"): Entry(care_team(), ws_probe=alerts.vitals_probe),
    # FHIR R4 (issue 17): factories in tests/teleconsult/fhir/matrix_support.py
    ("GET", "/fhir/r4/metadata"): Entry(public(), gateway=gateway_status(200)),
    ("GET", "/fhir/r4/Patient/{patient_id}"): Entry(care_team(), gateway=gateway_status(403)),
    ("GET", "/fhir/r4/Patient"): Entry(
        authenticated(),
        query=lambda ctx: {"identifier": f"urn:ietf:rfc:3986|urn:uuid:{ctx.patient_id}"},
        gateway=gateway_status(403),
    ),
    ("GET", "/fhir/r4/Device/{device_id}"): Entry(
        care_team(), params={"device_id": fhir.device_id}, gateway=gateway_status(403)
    ),
    ("GET", "/fhir/r4/Observation/{observation_id}"): Entry(
        care_team(), params={"observation_id": fhir.observation_id}, gateway=gateway_status(403)
    ),
    ("GET", "/fhir/r4/Observation"): Entry(
        care_team(), query=lambda ctx: {"patient": str(ctx.patient_id)}, gateway=gateway_status(403)
    ),
    ("GET", "/fhir/r4/Patient/{patient_id}/$everything"): Entry(care_team(), gateway=gateway_status(403)),
    ("GET", "/fhir/r4/MedicationRequest/{request_id}"): Entry(
        care_team(), params={"request_id": lambda ctx: rx.prescription_id(ctx) + "-1"}, gateway=gateway_status(403)
    ),
    ("GET", "/fhir/r4/MedicationRequest"): Entry(
        care_team(), query=lambda ctx: {"patient": str(ctx.patient_id)}, gateway=gateway_status(403)
    ),
    ("GET", "/fhir/r4/MedicationDispense/{dispense_id}"): Entry(
        care_team(), params={"dispense_id": rx.dispense_id}, gateway=gateway_status(403)
    ),
    ("GET", "/fhir/r4/MedicationDispense"): Entry(
        care_team(), query=lambda ctx: {"patient": str(ctx.patient_id)}, gateway=gateway_status(403)
    ),
    ("GET", "/fhir/r4/Medication/{medication_id}"): Entry(
        authenticated(), params={"medication_id": lambda ctx: "paracetamol-500mg-comprime"}, gateway=gateway_status(403)
    ),
    ("POST", "/fhir/r4"): Entry(care_team(), body=fhir.transaction_body, gateway=gateway_import()),
    ("GET", "/fhir/r4/AuditEvent"): Entry(
        admin_only(), query=lambda ctx: {"patient": str(ctx.patient_id)}, gateway=gateway_status(403)
    ),
    **{
        (method, "/fhir/r4/{path:path}"): Entry(
            public(404), params={"path": lambda ctx: "Encounter/1"}, gateway=gateway_status(404)
        )
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
    },
}
