"""`tbib db upgrade | status | retention` through the real CLI entry point."""

from __future__ import annotations

import json

from teleconsult.cli.main import main


def test_db_upgrade_status_retention(make_database, capsys) -> None:
    dsn = make_database("timescaledb")
    assert main(["db", "upgrade", "--dsn", dsn, "--json"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert first["flavour"] == "timescaledb"
    assert "0001_core.sql" in first["applied"]
    assert main(["db", "upgrade", "--dsn", dsn, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["applied"] == []
    assert main(["db", "status", "--dsn", dsn, "--json"]) == 0
    status = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert all(m["applied"] for m in status["migrations"])
    assert main(["db", "retention", "--dsn", dsn, "--json"]) == 0
    assert "deleted_rows" in json.loads(capsys.readouterr().out.splitlines()[-1])


def test_db_upgrade_plain_flag(make_database, capsys) -> None:
    dsn = make_database("plain")
    assert main(["db", "upgrade", "--plain", "--dsn", dsn, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["flavour"] == "plain"


def test_db_upgrade_unreachable_database_is_one_line_error(capsys) -> None:
    assert main(["db", "upgrade", "--dsn", "postgresql://nobody@127.0.0.1:1/x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tbib db: error: cannot connect to the database")


def test_db_rebuild_rollups_with_progress_bar(make_database, capsys) -> None:
    import uuid
    from datetime import UTC, datetime, timedelta

    import psycopg

    dsn = make_database("plain")
    assert main(["db", "upgrade", "--dsn", dsn, "--json"]) == 0
    capsys.readouterr()
    pid, t0 = uuid.uuid4(), datetime(2026, 11, 2, tzinfo=UTC)
    copy_sql = "copy readings (patient_id, metric, value, unit, measured_at, reading_id) from stdin"
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor().copy(copy_sql) as cp:
        for i in range(3 * 24 * 6):  # 3 days, one reading every 10 minutes, loaded around ingest
            cp.write_row((pid, "body_weight", 70 + i % 5, "kg", t0 + timedelta(minutes=10 * i), uuid.uuid4()))
    assert main(["db", "rebuild-rollups", "--dsn", dsn, "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out.splitlines()[-1])
    assert (report["chunks"], report["minute_rows"], report["hour_rows"]) == (3, 432, 72)
    assert "rebuild-rollups [" in err
    assert err.rstrip().endswith("3/3 chunks, eta 0 s")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select sum(count), min(min), max(max) from readings_1h").fetchone() == (432, 70, 74)
    assert main(["db", "rebuild-rollups", "--dsn", dsn, "--patient", "nope"]) == 2
    assert main(["db", "rebuild-rollups", "--dsn", dsn, "--since", "2026-11-02T00:00:00"]) == 2
    assert main(["db", "retention", "--dsn", dsn, "--hour-rollup-days", "0", "--json"]) == 0
    assert "rollup_rows_deleted" in json.loads(capsys.readouterr().out.splitlines()[-1])
