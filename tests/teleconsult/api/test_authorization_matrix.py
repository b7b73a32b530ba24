"""Every route x caller x (assigned, not assigned) -> the status :mod:`route_matrix` expects, on a real uvicorn.

Fails when a route of the app has no matrix entry (see route_matrix.py for how to add one).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import re
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Route, WebSocketRoute

from teleconsult.api.app import create_app
from teleconsult.security.enrolment import enroll_gateway
from tests.teleconsult.api.helpers import PASSWORD, LiveServer, Seeded, make_settings
from tests.teleconsult.api.route_matrix import CALLERS, MATRIX, Ctx

_APP = create_app(make_settings("postgresql://unused/x"))


def _flat_routes(app: Any) -> list[Any]:
    try:  # FastAPI >= 0.13x includes routers lazily; iter_route_contexts flattens them with their prefixes
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def app_routes(app: Any) -> list[tuple[str, str]]:
    """``(METHOD, path)`` for every HTTP method of every route, ``("WS", path)`` for websockets."""
    keys: list[tuple[str, str]] = []
    for rc in _flat_routes(app):
        route = getattr(rc, "original_route", rc)
        if isinstance(route, APIWebSocketRoute | WebSocketRoute):
            keys.append(("WS", rc.path))
        elif isinstance(route, APIRoute | Route):
            keys.extend((m, rc.path) for m in sorted(rc.methods or ()) if m != "HEAD")
        else:
            keys.append(("?", str(getattr(rc, "path", route))))  # a Mount or unknown route type: needs an entry too
    return keys


ROUTE_KEYS = app_routes(_APP)
CASES = [
    (key, caller, assigned) for key in ROUTE_KEYS if key in MATRIX for caller in CALLERS for assigned in (True, False)
]


def test_every_route_has_a_matrix_entry() -> None:
    missing = [f"{m} {p}" for m, p in ROUTE_KEYS if (m, p) not in MATRIX]
    stale = [f"{m} {p}" for m, p in MATRIX if (m, p) not in ROUTE_KEYS]
    assert not missing, f"routes without an entry in tests/teleconsult/api/route_matrix.py: {missing}"
    assert not stale, f"route_matrix.py entries for routes that no longer exist: {stale}"


@pytest.fixture(scope="module")
def matrix_server(seeded: Seeded) -> Any:
    with LiveServer(create_app(make_settings(seeded.dsn, ip_failure_limit=10_000))) as server:
        tokens = {}
        for caller in CALLERS[1:]:
            r = httpx.post(f"{server.url}/api/v1/auth/login", json={"username": f"m-{caller}", "password": PASSWORD})
            assert r.status_code == 200, r.text
            tokens[caller] = r.json()["access_token"]
        yield server, tokens


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m.group(1)], path)


@pytest.mark.parametrize(
    ("key", "caller", "assigned"), CASES, ids=[f"{k[0]} {k[1]} {c} {'assigned' if a else 'other'}" for k, c, a in CASES]
)
def test_matrix(key: tuple[str, str], caller: str, assigned: bool, seeded: Seeded, matrix_server: Any) -> None:
    server, tokens = matrix_server
    entry = MATRIX[key]
    patient_id = seeded.p1 if assigned else seeded.p2
    ctx = Ctx(seeded=seeded, caller=caller, assigned=assigned, patient_id=patient_id, base_url=server.url)
    token = tokens.get(caller)
    if entry.own_session and caller != "anonymous":
        r = httpx.post(f"{server.url}/api/v1/auth/login", json={"username": f"m-{caller}", "password": PASSWORD})
        token = r.json()["access_token"]
    method, path = key
    values = {"patient_id": str(patient_id)} | {name: make(ctx) for name, make in entry.params.items()}
    url = server.url + _fill(path, values)
    expected = entry.policy(caller, assigned)
    if method == "WS":
        assert entry.ws_probe is not None, f"websocket route {path} needs ws_probe in route_matrix.py"
        result = entry.ws_probe(ctx, url.replace("http", "ws", 1), token, patient_id)
        if inspect.isawaitable(result):
            result = asyncio.run(result)  # type: ignore[arg-type]
        assert result == expected
        return
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kwargs: dict[str, Any] = {"headers": headers}
    if entry.body is not None:
        kwargs["json"] = entry.body(ctx)
    if entry.query is not None:
        kwargs["params"] = entry.query(ctx)
    r = httpx.request(method, url, **kwargs)
    assert r.status_code == expected, (
        f"{method} {path} as {caller} ({'assigned' if assigned else 'other'}): {r.text[:300]}"
    )


GATEWAY_KEYS = [key for key in ROUTE_KEYS if key[1].startswith("/fhir/r4") and key in MATRIX]
GATEWAY_CASES = [(key, assigned) for key in GATEWAY_KEYS for assigned in (True, False)]


def test_every_fhir_route_has_a_gateway_policy() -> None:
    missing = [f"{m} {p}" for m, p in GATEWAY_KEYS if MATRIX[(m, p)].gateway is None]
    assert GATEWAY_KEYS
    assert not missing, f"/fhir/r4 routes without gateway= in route_matrix.py: {missing}"


@pytest.mark.parametrize(
    ("key", "assigned"),
    GATEWAY_CASES,
    ids=[f"{k[0]} {k[1]} gateway {'own' if a else 'other'}" for k, a in GATEWAY_CASES],
)
def test_gateway_matrix(key: tuple[str, str], assigned: bool, seeded: Seeded, matrix_server: Any) -> None:
    """A gateway's broker credential (HTTP Basic), the gateway bound to p1: imports for p1 only, reads nothing."""
    server, _ = matrix_server
    entry = MATRIX[key]
    assert entry.gateway is not None
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        secret = enroll_gateway(conn, "gw-matrix", patient_id=seeded.p1)
    patient_id = seeded.p1 if assigned else seeded.p2
    ctx = Ctx(seeded=seeded, caller="gateway", assigned=assigned, patient_id=patient_id, base_url=server.url)
    method, path = key
    values = {"patient_id": str(patient_id)} | {name: make(ctx) for name, make in entry.params.items()}
    basic = base64.b64encode(f"gw-matrix:{secret}".encode()).decode()
    kwargs: dict[str, Any] = {"headers": {"Authorization": f"Basic {basic}"}}
    if entry.body is not None:
        kwargs["json"] = entry.body(ctx)
    if entry.query is not None:
        kwargs["params"] = entry.query(ctx)
    r = httpx.request(method, server.url + _fill(path, values), **kwargs)
    assert r.status_code == entry.gateway(assigned), f"{method} {path} as gateway: {r.text[:300]}"


def test_matrix_size() -> None:
    """Recorded for the closing note: routes x callers x 2."""
    print(f"matrix: {len(ROUTE_KEYS)} routes x {len(CALLERS)} callers x 2 = {len(CASES)} cases")
    assert len(CASES) == len(ROUTE_KEYS) * len(CALLERS) * 2 or not all(k in MATRIX for k in ROUTE_KEYS)
