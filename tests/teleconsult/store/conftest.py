"""Fixtures of the storage tests: an upgraded database per module, in both flavours (``db_dsn``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from teleconsult.store.migrate import upgrade


@pytest.fixture(scope="module")
def store_dsn(db_dsn: str) -> str:
    upgrade(db_dsn)
    return db_dsn


@pytest.fixture
async def pool(store_dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    p = AsyncConnectionPool(store_dsn, min_size=1, max_size=4, open=False)
    await p.open()
    yield p
    await p.close()
