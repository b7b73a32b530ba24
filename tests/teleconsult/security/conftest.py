"""Fixtures for security tests: a migrated TimescaleDB database with the standard cast."""

from __future__ import annotations

import pytest

from teleconsult.store.migrate import upgrade
from tests.teleconsult.api.helpers import Seeded, seed


@pytest.fixture(scope="module")
def seeded(tsdb_dsn: str) -> Seeded:
    upgrade(tsdb_dsn)
    return seed(tsdb_dsn)
