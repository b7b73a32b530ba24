"""Fixtures: a migrated database with the API cast, a doctor with a registration number, two pharmacies with one
pharmacist each, and a live server signing with a key in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from teleconsult.api.app import create_app
from teleconsult.prescriptions import service
from teleconsult.store.migrate import upgrade
from tests.teleconsult.api.helpers import SECRET, LiveServer, Seeded, login, make_settings, seed
from tests.teleconsult.prescriptions.helpers import keys_at, prepare


@dataclass
class RxEnv:
    seeded: Seeded
    url: str
    tokens: dict[str, str]
    keys: service.Keys
    key_path: Path

    @property
    def dsn(self) -> str:
        return self.seeded.dsn

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def call(self, method: str, path: str, who: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}/api/v1{path}", headers=self.h(who), timeout=30, **kw)

    def sql(self, query: str, args: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query, args)
            return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def rx_env(tsdb_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RxEnv]:
    upgrade(tsdb_dsn)
    s = seed(tsdb_dsn, prefix="rx")
    s.users["pharmacist2"] = s.add_user("rx-pharmacist2", "pharmacist")
    s.users["doctor2"] = s.add_user("rx-doctor2", "doctor")
    s.assign(s.users["doctor2"], s.p1)
    prepare(tsdb_dsn, s.users["doctor"], [s.users["pharmacist"], s.users["pharmacist2"]])
    key_path = tmp_path_factory.mktemp("rxkey") / "signing.pem"
    settings = make_settings(
        tsdb_dsn,
        ext={"prescriptions": {"signing_key_file": str(key_path)}},
        ip_failure_limit=10_000,
        access_token_ttl_s=3600,
    )
    with LiveServer(create_app(settings)) as server:
        names = ["admin", "doctor", "doctor2", "nurse", "pharmacist", "pharmacist2", "patient", "patient2"]
        tokens = {n: login(server.url, f"rx-{n}") for n in names}
        yield RxEnv(seeded=s, url=server.url, tokens=tokens, keys=keys_at(key_path, SECRET), key_path=key_path)
