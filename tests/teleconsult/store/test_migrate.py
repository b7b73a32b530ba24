"""Migration runner: sections per flavour, re-runnable, recorded, serialized by an advisory lock."""

from __future__ import annotations

import threading

import psycopg
import pytest

from teleconsult.errors import MigrationError
from teleconsult.store.migrate import Migration, database_flavour, load_migrations, status, upgrade


def test_sections_select_the_flavour() -> None:
    m = Migration("0001_x.sql", "a;\n-- tbib:timescaledb\nts;\n-- tbib:plain\npl;\n-- tbib:common\nb;\n")
    assert m.sql_for("timescaledb").split() == ["a;", "ts;", "b;"]
    assert m.sql_for("plain").split() == ["a;", "pl;", "b;"]


def test_shipped_migrations_are_named_and_ordered() -> None:
    names = [m.name for m in load_migrations()]
    assert names == sorted(names)
    assert names[0] == "0001_core.sql"


def test_upgrade_is_rerunnable_and_detects_flavour(store_dsn: str, request: pytest.FixtureRequest) -> None:
    flavour = request.node.callspec.params["db_dsn"]
    assert upgrade(store_dsn) == []  # the fixture already upgraded
    assert database_flavour(store_dsn) == flavour
    assert all(applied for _, applied in status(store_dsn))
    with psycopg.connect(store_dsn) as conn:
        hyper = (
            conn.execute(
                "select count(*) from pg_extension e where e.extname = 'timescaledb'"
                " and exists (select 1 from timescaledb_information.hypertables where hypertable_name = 'readings')"
            ).fetchone()
            if flavour == "timescaledb"
            else (0,)
        )
        recorded = conn.execute("select distinct flavour from schema_migrations").fetchall()
    assert recorded == [(flavour,)]
    assert hyper == ((1,) if flavour == "timescaledb" else (0,))


def test_concurrent_upgrades_apply_once(make_database) -> None:
    dsn = make_database("plain")
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(upgrade(dsn))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    applied = [name for r in results for name in r]
    assert sorted(applied) == [m.name for m in load_migrations()]


def test_plain_cannot_be_forced_on_a_timescaledb_database(make_database) -> None:
    dsn = make_database("timescaledb")
    upgrade(dsn)
    with pytest.raises(MigrationError):
        upgrade(dsn, timescaledb=False)
