"""`tbib fhir export|import` against the real database: the export is a valid collection Bundle that imports back as a
no-op; a bad entry is reported with its index in the file; --batch keeps the valid entries."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from teleconsult.cli.main import main
from tests.teleconsult.fhir.conftest import N_SPO2, Env
from tests.teleconsult.fhir.profile import check


def test_export_then_import_is_a_no_op(fhir_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundle.json"
    p1 = str(fhir_env.seeded.p1)
    assert main(["fhir", "export", p1, "--since", "2026-11-01", "--database-url", fhir_env.dsn, "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["type"] == "collection"
    types = [e["resource"]["resourceType"] for e in doc["entry"]]
    assert types.count("Patient") == 1
    assert types.count("Flag") == 1
    assert types.count("Observation") >= N_SPO2 + 3
    assert check(doc) == len(doc["entry"]) + 1
    times = [e["resource"]["effectiveDateTime"] for e in doc["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert times == sorted(times)
    before = fhir_env.sql("select count(*) from readings")[0][0]
    capsys.readouterr()
    assert main(["fhir", "import", str(out), "--database-url", fhir_env.dsn, "--chunk", "100"]) == 0
    summary = capsys.readouterr().out
    assert f"imported 0 new observations, {types.count('Observation')} already stored, 0 rejected" in summary
    assert fhir_env.sql("select count(*) from readings")[0][0] == before
    audit = fhir_env.sql("select count(*) from audit_events where resource in ('tbib fhir export', 'tbib fhir import')")
    assert audit[0][0] >= 2


def test_import_reports_rejected_entries(fhir_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p1 = fhir_env.seeded.p1

    def obs(unit: str) -> dict:
        return {
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "9279-1"}]},
                "subject": {"reference": f"Patient/{p1}"},
                "effectiveDateTime": "2026-11-30T12:00:00Z",
                "valueQuantity": {"value": 18, "system": "http://unitsofmeasure.org", "code": unit},
            }
        }

    path = tmp_path / "in.json"
    path.write_text(
        json.dumps(
            {"resourceType": "Bundle", "type": "transaction", "entry": [obs("/min"), obs("/min"), obs("breaths/min")]}
        )
    )
    before = fhir_env.sql("select count(*) from readings")[0][0]
    assert main(["fhir", "import", str(path), "--database-url", fhir_env.dsn]) == 1
    err = capsys.readouterr().err
    assert "entry 2: Bundle.entry[2].resource.valueQuantity.code: wrong unit 'breaths/min'" in err
    assert fhir_env.sql("select count(*) from readings")[0][0] == before
    assert main(["fhir", "import", str(path), "--database-url", fhir_env.dsn, "--batch"]) == 1
    assert "imported 2 new observations, 0 already stored, 1 rejected" in capsys.readouterr().out
    assert fhir_env.sql("select count(*) from readings")[0][0] == before + 2


def test_cli_errors(fhir_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fhir", "export", "nope", "--database-url", fhir_env.dsn]) == 1
    assert "not a patient id" in capsys.readouterr().err
    assert main(["fhir", "export", str(uuid.uuid4()), "--database-url", fhir_env.dsn]) == 1
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "x.json"
    bad.write_text('{"resourceType": "Patient"}')
    assert main(["fhir", "import", str(bad), "--database-url", fhir_env.dsn]) == 1
    assert "not a FHIR Bundle" in capsys.readouterr().err
