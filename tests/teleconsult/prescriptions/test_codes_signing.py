"""Access codes, QR payloads, canonical JSON, Ed25519 signing of the FHIR payload, the formulary file."""

from __future__ import annotations

import json
import stat
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from teleconsult.fhir.medication import signed_payload
from teleconsult.prescriptions import codes, formulary, rules
from teleconsult.prescriptions.errors import FormularyError, SigningKeyError
from teleconsult.prescriptions.model import Party, Prescription
from teleconsult.prescriptions.signing import Signer, canonical
from teleconsult.prescriptions.views import verify
from tests.teleconsult.prescriptions.helpers import line

SECRET = "s" * 40
T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def test_codes_have_80_bits_and_normalize() -> None:
    made = {codes.generate() for _ in range(2000)}
    assert len(made) == 2000
    assert all(len(c) == 16 and set(c) <= set(codes.ALPHABET) for c in made)
    c = "7KQ2M9XD4TPAZ3HW"
    assert codes.display(c) == "7KQ2-M9XD-4TPA-Z3HW"
    assert codes.normalize(" 7kq2-m9xd 4tpa-z3hw ") == c
    assert codes.normalize("OIL0" + c[4:]) == "0110" + c[4:]
    assert codes.normalize("7KQ2-M9XD") is None
    assert codes.normalize("U" * 16) is None  # U is not in Crockford's alphabet


def test_digest_and_seal_are_bound_to_the_prescription() -> None:
    a, b, code = uuid.uuid4(), uuid.uuid4(), codes.generate()
    stored = codes.digest(SECRET, a, code)
    assert codes.matches(SECRET, a, code, stored)
    assert not codes.matches(SECRET, b, code, stored)
    assert not codes.matches("t" * 40, a, code, stored)
    sealed = codes.seal(SECRET, a, code)
    assert code.encode() not in sealed
    assert codes.unseal(SECRET, a, sealed) == code
    with pytest.raises(InvalidTag):
        codes.unseal(SECRET, b, sealed)


def test_qr_payload_round_trip() -> None:
    rx_id, code = uuid.uuid4(), codes.generate()
    payload = codes.qr_payload("https://tbib.example/", rx_id, code)
    assert payload == f"https://tbib.example/#/pharmacy/{rx_id}/{code}"
    assert codes.parse_qr(payload) == (rx_id, code)
    assert codes.parse_qr(f"{rx_id}/{codes.display(code)}") == (rx_id, code)
    assert codes.parse_qr("https://evil.example/") is None


def test_canonical_json_is_stable() -> None:
    assert canonical({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical({"x": float("nan")})


def _rx(signer: Signer) -> Prescription:
    result = rules.check([line()], formulary=formulary.load(), allergies=[], issued_at=T0)
    pid = uuid.uuid4()
    unsigned = Prescription(
        id=pid, series_id=pid, version=1, replaces=None, patient=Party(uuid.uuid4(), "Fatima Zahra"),
        prescriber=Party(uuid.uuid4(), "Dr Bennani", "INPE 1"), consultation_id=None, issued_at=T0,
        valid_until=result.valid_until, note="", lines=result.lines, signature=b"", key_id=signer.key_id,
    )  # fmt: skip
    return replace(unsigned, signature=signer.sign(signed_payload(unsigned)))


def test_signature_covers_every_frozen_field_but_not_later_state() -> None:
    signer = Signer.generate()
    rx = _rx(signer)
    assert verify(rx, signer)
    ln = rx.lines[0]
    tampered = [
        replace(rx, lines=(replace(ln, quantity=ln.quantity + 1),)),
        replace(rx, lines=(replace(ln, dose=2.0),)),
        replace(rx, patient=replace(rx.patient, display_name="Autre")),
        replace(rx, prescriber=replace(rx.prescriber, registration_number="INPE 2")),
        replace(rx, valid_until=rx.valid_until.replace(year=2030)),
        replace(rx, signature=bytes(64)),
    ]
    assert not any(verify(t, signer) for t in tampered)
    assert not verify(rx, Signer.generate())  # another key
    assert verify(replace(rx, dispensed={1: 1}, revision=1, cancelled_at=T0), signer)


def test_key_file_is_created_once_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "rx.pem"
    first = Signer.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Signer.load_or_create(path).key_id == first.key_id
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(SigningKeyError):
        Signer.load_or_create(tmp_path / "bad.pem")


def test_formulary_file_states_source_and_licence_and_parses() -> None:
    f = formulary.load()
    assert len(f.products) >= 200
    assert "WHO" in f.meta["source"]
    assert "CC0" in f.meta["licence"]
    assert all(p.antibiotic == (p.atc.startswith("J01") or p.atc == "P01AB01") for p in f.products)
    assert [p.id for p in f.search("parac 500")] == ["paracetamol-500mg-comprime"]
    assert {p.inn for p in f.search("AMOX")} == {"amoxicilline", "amoxicilline + acide clavulanique"}
    assert f.search("J01MA")[0].inn == "ciprofloxacine"
    with pytest.raises(FormularyError):
        formulary.parse(json.dumps({"products": []}))
    with pytest.raises(FormularyError):
        formulary.parse(json.dumps({"source": "x", "licence": "y", "products": [["a", "1 mg", "comprimé", "BAD", 0]]}))
