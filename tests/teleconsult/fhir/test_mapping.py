"""Pure mapping: tbib records -> FHIR resources (validated with fhir.resources R4B + profile check) and back."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from devices.codes import METRICS, TBIB_METRIC_SYSTEM
from teleconsult.errors import TeleconsultError
from teleconsult.fhir import capability, terminology
from teleconsult.fhir.bundle import searchset
from teleconsult.fhir.errors import FhirError, InvalidResourceError
from teleconsult.fhir.observation import is_anchor, observation, observations, parse_observation
from teleconsult.fhir.records import AlertRecord, DeviceRecord, GatewayRecord, PatientRecord, ReadingRecord
from teleconsult.fhir.resources import device_resource, flag_resource, gateway_resource, outcome, patient_resource
from tests.teleconsult.fhir.profile import LOINC, MDC, check

P = uuid.UUID("11111111-1111-4111-8111-111111111111")
D = uuid.UUID("22222222-2222-4222-8222-222222222222")
T0 = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 7, 9, 0, 0, tzinfo=UTC)


def reading(metric: str, value: float, unit: str, **kw: object) -> ReadingRecord:
    return ReadingRecord(
        reading_id=kw.pop("rid", uuid.uuid4()),  # type: ignore[arg-type]
        patient_id=P,
        device_id=D,
        metric=metric,
        value=value,
        unit=unit,
        measured_at=kw.pop("at", T0),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def codes(concept: dict) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept["coding"]}


def test_every_metric_has_a_code_and_maps_to_a_valid_observation() -> None:
    for name, metric in METRICS.items():
        system, code, _ = metric.primary_coding
        assert code, name
        if not metric.loinc:
            assert (system, code) == (TBIB_METRIC_SYSTEM, name)
        obs = observation(reading(name, 1.0, metric.canonical_unit))
        assert check(obs) == 1


@pytest.mark.parametrize(
    ("metric", "value", "unit", "loinc", "mdc", "out_unit"),
    [
        ("heart_rate", 72.0, "/min", "8867-4", "147842", "/min"),
        ("pulse_rate", 70.0, "/min", "8867-4", "149530", "/min"),
        ("spo2", 97.0, "%", "2708-6", "150456", "%"),
        ("body_temperature", 37.2, "Cel", "8310-5", "150364", "Cel"),
        ("body_weight", 70.5, "kg", "29463-7", "188736", "kg"),
        ("respiratory_rate", 16.0, "/min", "9279-1", "151562", "/min"),
    ],
)
def test_vital_sign_observation(metric: str, value: float, unit: str, loinc: str, mdc: str, out_unit: str) -> None:
    rid = uuid.uuid4()
    obs = observation(reading(metric, value, unit, rid=rid, received_at=T0 + timedelta(seconds=2)))
    check(obs)
    assert obs["id"] == str(rid)
    assert obs["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{rid}"}]
    assert {(LOINC, loinc), (MDC, mdc)} <= codes(obs["code"])
    assert obs["valueQuantity"] == {
        "value": value,
        "unit": out_unit,
        "system": "http://unitsofmeasure.org",
        "code": out_unit,
    }
    assert obs["subject"] == {"reference": f"Patient/{P}"}
    assert obs["device"] == {"reference": f"Device/{D}"}
    assert obs["effectiveDateTime"] == "2026-11-29T10:00:00+00:00"
    assert obs["issued"] == "2026-11-29T10:00:02+00:00"
    assert obs["status"] == "final"
    assert obs["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]


def test_body_height_in_centimetres_round_trip() -> None:
    obs = observation(reading("body_height", 1.75, "m"))
    check(obs)
    assert obs["valueQuantity"]["code"] == "cm"
    assert obs["valueQuantity"]["value"] == 175.0
    assert "note" not in obs
    (r,) = parse_observation(obs, now=NOW).readings
    assert (r.value, r.unit, r.flags) == (1.75, "m", {})


def test_spo2_carries_pulse_oximetry_code_and_glucose_moles() -> None:
    assert (LOINC, "59408-5") in codes(observation(reading("spo2", 95.0, "%"))["code"])
    g = observation(reading("glucose", 5.4, "mmol/L"))
    check(g)
    assert (LOINC, "15074-8") in codes(g["code"])
    assert g["category"][0]["coding"][0]["code"] == "laboratory"
    assert (LOINC, "2339-0") in codes(observation(reading("glucose", 98.0, "mg/dL"))["code"])


def test_time_in_other_zone_is_written_in_utc() -> None:
    at = datetime(2026, 11, 29, 11, 0, 0, 120_000, tzinfo=timezone(timedelta(hours=1)))
    assert observation(reading("spo2", 95.0, "%", at=at))["effectiveDateTime"] == "2026-11-29T10:00:00.120+00:00"


def test_fahrenheit_reading_is_converted_and_the_original_kept() -> None:
    obs = observation(reading("body_temperature", 98.6, "[degF]"))
    check(obs)
    assert obs["valueQuantity"]["value"] == 37.0
    assert obs["valueQuantity"]["code"] == "Cel"
    reported = [e for e in obs["extension"] if e["url"] == terminology.EXT_REPORTED]
    assert reported[0]["valueQuantity"]["value"] == 98.6
    assert reported[0]["valueQuantity"]["code"] == "[degF]"
    assert "98.6 [degF]" in obs["note"][0]["text"]


def test_blood_pressure_panel_grouped_by_group_id() -> None:
    group = uuid.uuid4()
    flags = {"cuff_too_loose": True, "body_movement": True}
    sys_ = reading("systolic_bp", 138.0, "mm[Hg]", group_id=group, flags=flags)
    dia = reading("diastolic_bp", 88.0, "mm[Hg]", group_id=group, flags=flags)
    mean = reading("mean_arterial_pressure", 105.0, "mm[Hg]", group_id=group, flags=flags)
    pulse = reading("pulse_rate", 72.0, "/min", group_id=group, flags={"pulse_rate_range": "above"})
    other = reading("systolic_bp", 120.0, "mm[Hg]", group_id=uuid.uuid4())
    obs = observations([sys_, dia, mean, pulse, other])
    assert len(obs) == 3
    panel, hr, lone = obs
    check(panel)
    check(hr)
    check(lone)
    assert panel["id"] == str(sys_.reading_id)
    assert {(LOINC, "85354-9"), (MDC, "150020")} <= codes(panel["code"])
    comps = {
        next(c["code"] for c in comp["code"]["coding"] if c["system"] == LOINC): comp for comp in panel["component"]
    }
    assert comps["8480-6"]["valueQuantity"]["value"] == 138.0
    assert comps["8462-4"]["valueQuantity"]["value"] == 88.0
    assert comps["8478-0"]["valueQuantity"]["value"] == 105.0
    assert {(MDC, "150021")} <= codes(comps["8480-6"]["code"])
    assert [i["text"] for i in panel["interpretation"]] == ["body movement", "cuff too loose"]
    assert "cuff_too_loose" in panel["note"][0]["text"]
    assert hr["interpretation"][0]["coding"][0]["code"] == "H"
    lone_comps = [c for c in lone["component"] if "dataAbsentReason" in c]
    assert len(lone_comps) == 1  # diastolic missing: data absent; MAP omitted
    assert not is_anchor(dia)
    assert is_anchor(reading("diastolic_bp", 80.0, "mm[Hg]", group_id=group, flags={"systolic_bp_unavailable": "NaN"}))


def test_device_patient_flag_outcome_capability_resources() -> None:
    pat = patient_resource(PatientRecord(P, "Amina B.", date(1950, 3, 4), "F", ((terminology.CIN_SYSTEM, "AB123456"),)))
    assert pat["gender"] == "female"
    assert {"use": "official", "system": terminology.CIN_SYSTEM, "value": "AB123456"} in pat["identifier"]
    dev = device_resource(DeviceRecord(D, "gw-0001", P, "AA:BB:CC:DD:EE:FF", "BP-X", "SN1", "blood_pressure"))
    assert dev["identifier"] == [{"system": "http://hl7.org/fhir/sid/eui-48/bluetooth", "value": "AA:BB:CC:DD:EE:FF"}]
    assert dev["parent"] == {"reference": "Device/gw.gw-0001"}
    assert dev["type"]["coding"][0]["code"] == "528391"
    gw = gateway_resource(GatewayRecord("gw-0001", P))
    flag = flag_resource(AlertRecord(7, P, "spo2_low", "high", "open", T0))
    oo = outcome([("invalid", "bad unit", "Bundle.entry[0].resource.valueQuantity.code")])
    cs = capability.capability_statement("http://x/fhir/r4", NOW, "0.1.0")
    for r in (pat, dev, gw, flag, oo, cs):
        assert check(r) == 1
    bundle = searchset(
        "http://x/fhir/r4",
        [observation(reading("spo2", 95.0, "%"))],
        total=1,
        links={"self": "http://x/fhir/r4/Observation?patient=1"},
        now=NOW,
        includes=[pat],
    )
    assert check(bundle) == 3


def test_round_trip_observation_to_readings() -> None:
    group = uuid.uuid4()
    rows = [
        reading("systolic_bp", 138.0, "mm[Hg]", group_id=group, flags={"irregular_pulse": True}),
        reading("diastolic_bp", 88.0, "mm[Hg]", group_id=group, flags={"irregular_pulse": True}),
        reading("spo2", 95.0, "%", flags={"low_perfusion": True}),
        reading("body_temperature", 98.6, "[degF]"),
        reading("rr_interval", 0.8, "s"),
        reading("glucose", 5.4, "mmol/L"),
    ]
    back = []
    for obs in observations(rows):
        parsed = parse_observation(json.loads(json.dumps(obs)), now=NOW)
        assert parsed.patient_ref == f"Patient/{P}"
        assert parsed.device_ref == f"Device/{D}"
        back += list(parsed.readings)
    assert [(r.reading_id, r.metric, r.value, r.unit, r.measured_at) for r in back] == [
        (rows[0].reading_id, "systolic_bp", 138.0, "mm[Hg]", T0),
        (rows[1].reading_id, "diastolic_bp", 88.0, "mm[Hg]", T0),
        (rows[2].reading_id, "spo2", 95.0, "%", T0),
        (rows[3].reading_id, "body_temperature", 37.0, "Cel", T0),
        (rows[4].reading_id, "rr_interval", 0.8, "s", T0),
        (rows[5].reading_id, "glucose", 5.4, "mmol/L", T0),
    ]
    assert back[0].group_id == group
    assert back[0].flags == {"irregular_pulse": True}
    assert back[2].flags == {"low_perfusion": True}
    assert back[3].flags == {"reported_value": 98.6, "reported_unit": "[degF]"}


def test_hand_written_phd_observation_is_parsed() -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:oid:1.2.3", "value": "meter-42-seq-17"}],
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
                ]
            }
        ],
        "code": {"coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "188736"}]},
        "subject": {"reference": f"Patient/{P}"},
        "effectiveDateTime": "2026-11-29T08:00:00-05:00",
        "valueQuantity": {"value": 154.32, "unit": "lb", "system": "http://unitsofmeasure.org", "code": "[lb_av]"},
    }
    (r,) = parse_observation(obs, now=NOW).readings
    assert (r.metric, r.value, r.unit) == ("body_weight", 69.9984, "kg")
    assert r.flags == {"reported_value": 154.32, "reported_unit": "[lb_av]"}
    assert r.measured_at == datetime(2026, 11, 29, 13, 0, tzinfo=UTC)
    assert r.reading_id == parse_observation(obs, now=NOW).readings[0].reading_id  # stable: replay maps to same id


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        ({"valueQuantity": {"value": 72, "code": "bpm", "system": "http://unitsofmeasure.org"}},
         "Observation.valueQuantity.code"),
        ({"valueQuantity": {"value": "72", "code": "/min"}}, "Observation.valueQuantity.value"),
        ({"code": {"coding": [{"system": "http://loinc.org", "code": "0000-0"}]}}, "Observation.code"),
        ({"effectiveDateTime": "2026-11-29"}, "Observation.effectiveDateTime"),
        ({"effectiveDateTime": "2026-11-29T10:00:00"}, "Observation.effectiveDateTime"),
        ({"effectiveDateTime": "2030-01-01T00:00:00Z"}, "Observation.effectiveDateTime"),
        ({"status": "entered-in-error"}, "Observation.status"),
        ({"subject": None}, "Observation.subject"),
        ({"resourceType": "Patient"}, "Observation.resourceType"),
    ],
)  # fmt: skip
def test_invalid_observations_name_the_element(change: dict, expression: str) -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{P}"},
        "effectiveDateTime": "2026-11-29T10:00:00Z",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    } | change
    with pytest.raises(InvalidResourceError) as info:
        parse_observation(obs, now=NOW)
    assert info.value.expression == expression
    assert isinstance(info.value, FhirError)
    assert isinstance(info.value, TeleconsultError)
