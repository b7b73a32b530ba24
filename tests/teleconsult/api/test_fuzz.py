"""Fuzz the whole HTTP API from its OpenAPI document with schemathesis (slow): no request may produce a 5xx.

Runs against a real uvicorn with a real database, authenticated as a doctor on p1's care team; every other case that
has a ``patient_id`` uses p1, so the fuzzer also reaches the code behind the care-team check. The number of examples
run is printed at the end (``-s``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from teleconsult.api.app import create_app
from tests.teleconsult.api.helpers import PASSWORD, LiveServer, Seeded, make_settings

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 60
_stats = {"examples": 0, "operations": 0, "statuses": {}}  # type: dict[str, Any]


@pytest.fixture(scope="module")
def fuzz_server(seeded: Seeded) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    app = create_app(
        make_settings(seeded.dsn, ip_failure_limit=1_000_000, lockout_threshold=1_000_000, access_token_ttl_s=3600)
    )
    with LiveServer(app) as server:
        r = httpx.post(f"{server.url}/api/v1/auth/login", json={"username": "m-doctor", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        yield server, headers
    print(
        f"\nschemathesis: {_stats['examples']} examples over {_stats['operations']} operations, "
        f"statuses {dict(sorted(_stats['statuses'].items()))}"
    )


# The OpenAPI document of the app as built (no connection needed); calls go to the live server.
schema = schemathesis.openapi.from_dict(create_app(make_settings("postgresql://unused/x")).openapi())
_seen: set[str] = set()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any, fuzz_server: tuple[LiveServer, dict[str, str]], seeded: Seeded) -> None:
    server, headers = fuzz_server
    if case.path_parameters and "patient_id" in case.path_parameters and _stats["examples"] % 2 == 0:
        case.path_parameters["patient_id"] = str(seeded.p1)
    key = case.operation.label
    if key == "POST /api/v1/auth/logout":  # would end the shared session: use a session of its own
        r = httpx.post(f"{server.url}/api/v1/auth/login", json={"username": "m-doctor", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    response = case.call(base_url=server.url, headers=headers, timeout=30)
    _stats["examples"] += 1
    if key not in _seen:
        _seen.add(key)
        _stats["operations"] += 1
    _stats["statuses"][response.status_code] = _stats["statuses"].get(response.status_code, 0) + 1
    assert response.status_code < 500, f"{key} -> {response.status_code}: {response.text[:500]}"
