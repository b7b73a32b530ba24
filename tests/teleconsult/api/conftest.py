"""Fixtures for API tests: a migrated database with the standard cast, and a live server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from teleconsult.api.app import create_app
from teleconsult.store.migrate import upgrade
from tests.teleconsult.api.helpers import LiveServer, Seeded, make_settings, seed


@pytest.fixture(scope="module")
def seeded(tsdb_dsn: str) -> Seeded:
    upgrade(tsdb_dsn)
    return seed(tsdb_dsn)


@pytest.fixture(scope="module")
def live_server(seeded: Seeded) -> Iterator[LiveServer]:
    with LiveServer(create_app(make_settings(seeded.dsn))) as server:
        yield server
