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
