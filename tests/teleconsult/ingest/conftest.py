"""Fixtures of the ingest tests (helpers live in helpers.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.teleconsult.ingest.helpers import Gateways, OwnBroker, OwnPostgres, Publisher, make_gateways


@pytest.fixture(scope="module")
def gateways(tsdb_dsn: str) -> Gateways:
    return make_gateways(tsdb_dsn)


@pytest.fixture
def publisher(mqtt_host_port: tuple[str, int]) -> Iterator[Publisher]:
    pub = Publisher(*mqtt_host_port)
    yield pub
    pub.close()


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a private cluster as user postgres")
    pg = OwnPostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def own_broker() -> Iterator[OwnBroker]:
    broker = OwnBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.destroy()
