"""`tbib users`, `tbib pki gateways` and their one-line errors."""

from __future__ import annotations

import io
import json
import sys

import pytest

from teleconsult.cli.main import main as tbib
from tests.teleconsult.api.helpers import Seeded


def test_users_add_list_disable_enable(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database-url", seeded.dsn]
    monkeypatch.setattr(sys, "stdin", io.StringIO("first-admin-password\n"))
    assert tbib(["users", "add", "Root-Admin", "--role", "admin", "--display-name", "Root", *db]) == 0
    assert "created admin root-admin" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("another-password\n"))
    assert tbib(["users", "add", "root-admin", "--role", "doctor", *db]) == 1
    assert "taken" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert tbib(["users", "add", "someone", "--role", "doctor", *db]) == 1
    assert "at least 10" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("long-enough-password\n"))
    assert tbib(["users", "add", "pat", "--role", "patient", *db]) == 1  # a patient account needs --patient-id
    assert "patient_id" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("long-enough-password\n"))
    assert tbib(["users", "add", "pat", "--role", "patient", "--patient-id", str(seeded.p2), *db]) == 0
    capsys.readouterr()
    assert tbib(["users", "list", "--json", *db]) == 0
    users = {u["username"]: u for u in map(json.loads, capsys.readouterr().out.splitlines())}
    assert users["root-admin"]["role"] == "admin"
    assert users["pat"]["patient_id"] == str(seeded.p2)
    assert tbib(["users", "disable", "root-admin", *db]) == 0
    assert tbib(["users", "list", *db]) == 0
    assert any("root-admin" in line and "disabled" in line for line in capsys.readouterr().out.splitlines())
    assert tbib(["users", "enable", "root-admin", *db]) == 0
    assert tbib(["users", "disable", "nobody", *db]) == 1
    assert "not found" in capsys.readouterr().err


def test_unreachable_database_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = tbib(["users", "list", "--database-url", "postgresql://nobody@127.0.0.1:1/x?connect_timeout=1"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("tbib users: error: cannot")
    assert len(err.strip().splitlines()) == 1
    assert tbib(["audit", "verify", "--database-url", "postgresql://nobody@127.0.0.1:1/x?connect_timeout=1"]) == 1


def test_pki_gateways_list(seeded: Seeded, tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--database-url", seeded.dsn]
    assert tbib(["pki", "enroll-gateway", "gw-list-1", *db]) == 0
    out = capsys.readouterr().out
    assert "no broker files configured" in out
    assert tbib(["pki", "enroll-gateway", "bad/id", *db]) == 1
    assert "invalid name" in capsys.readouterr().err
    assert tbib(["pki", "revoke-gateway", "gw-list-1", *db]) == 0
    assert tbib(["pki", "revoke-gateway", "gw-list-1", *db]) == 1
    capsys.readouterr()
    assert tbib(["pki", "gateways", "--json", *db]) == 0
    rows = {g["gateway_id"]: g for g in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["gw-list-1"]["revoked_at"] is not None
