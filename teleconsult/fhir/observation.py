"""Readings <-> FHIR R4 ``Observation`` (pure, no I/O).

Out (:func:`observation`): one Observation per reading, except blood pressure: the readings of one measurement (same
``group_id``) become one panel 85354-9 with components systolic 8480-6, diastolic 8462-4 and mean 8478-0 (when
present). The panel is *anchored* on its systolic reading (:func:`is_anchor`): its id and identifier are the systolic
reading's; diastolic/mean readings of a group are folded into it, unless the device flagged the anchor's value
unavailable (``systolic_bp_unavailable``), in which case the next one anchors. Every Observation:

- follows the vital-signs profile when the metric is a vital sign: category ``vital-signs``, LOINC code, UCUM unit
  (the metric's canonical unit: values stored in ``[degF]``/``[lb_av]``/``kPa`` are converted);
- is dual-coded with the MDC code (``urn:iso:std:iso:11073:10101``) when the metric has one; metrics without a LOINC
  code carry tbib's CodeSystem (:data:`devices.codes.TBIB_METRIC_SYSTEM`) instead, never an empty coding;
- has ``identifier`` = ``urn:ietf:rfc:3986|urn:uuid:<reading id>`` (what makes an import idempotent), ``device`` =
  ``Device/<device id>``, ``effectiveDateTime`` = ``measured_at`` in UTC with its offset, ``issued`` = received_at;
- keeps the device's status flags: as ``interpretation`` (quality problems as text, pulse range as H/L), as a ``note``
  and, losslessly, in the extension :data:`EXT_DEVICE_FLAGS` (JSON); the value/unit as reported before a conversion
  in :data:`EXT_REPORTED` and the note.

In (:func:`parse_observation`): an Observation (hand-written by a PHD gateway or exported by tbib) -> the readings it
carries, in canonical units, with :class:`~teleconsult.fhir.errors.InvalidResourceError` naming the offending element.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from devices.codes import METRICS, UCUM_SYSTEM, convert, get_metric
from teleconsult.fhir import terminology as t
from teleconsult.fhir.errors import InvalidResourceError
from teleconsult.fhir.records import ReadingRecord

#: Namespace of the reading ids derived from foreign identifiers or content (uuid5).
ID_NAMESPACE: Final = uuid.UUID("6f1c8a52-1d0e-5a7b-9c41-74626962f417")
#: Flags that describe a measurement-quality problem reported by the device (shown as ``interpretation`` text).
QUALITY_FLAGS: Final = frozenset(
    {
        "body_movement", "cuff_too_loose", "irregular_pulse", "improper_position", "questionable", "invalid",
        "measurement_unsuccessful", "low_perfusion", "poor_signal", "inadequate_signal", "erratic_signal",
        "signal_processing_irregularity", "sensor_displaced", "sensor_malfunctioning", "sensor_disconnected",
        "sensor_unconnected_to_user", "equipment_malfunction", "sensor_interference", "questionable_pulse",
        "nonpulsatile_signal", "device_clock_not_set", "device_time_invalid",
    }
)  # fmt: skip
PRELIMINARY_FLAGS: Final = frozenset({"intermediate", "early_estimate", "ongoing"})
REPORTED_VALUE: Final = "reported_value"
REPORTED_UNIT: Final = "reported_unit"
_MAX_FUTURE: Final = timedelta(hours=24)
_ACCEPTED_STATUS: Final = frozenset({"final", "amended", "corrected", "preliminary", "registered"})


def is_anchor(r: ReadingRecord) -> bool:
    """True when the reading is an Observation of its own (False: folded into its group's blood-pressure panel)."""
    if r.metric not in t.PANEL_MEMBERS or r.group_id is None:
        return True
    flags = r.flags or {}
    if r.metric == "diastolic_bp":
        return "systolic_bp_unavailable" in flags
    return "systolic_bp_unavailable" in flags and "diastolic_bp_unavailable" in flags


def reading_uri(reading_id: uuid.UUID) -> dict[str, str]:
    """The ``Identifier`` of a reading."""
    return {"system": t.URI_SYSTEM, "value": f"urn:uuid:{reading_id}"}


def fhir_instant(at: datetime) -> str:
    """``2026-11-29T10:00:00.120+00:00``: UTC, explicit offset (naive times are refused)."""
    if at.tzinfo is None:
        raise ValueError("naive datetime")
    return at.astimezone(UTC).isoformat(timespec="milliseconds" if at.microsecond else "seconds")


def _round(value: float) -> float:
    """Converted values: 6 significant digits are more than any home device measures (98.6 [degF] -> 37.0 Cel)."""
    return float(f"{value:.6g}")


def _quantity(metric_name: str, value: float, unit: str) -> tuple[dict[str, Any], tuple[float, str] | None]:
    """``valueQuantity`` in the metric's FHIR unit (:func:`~teleconsult.fhir.terminology.fhir_unit`), and the
    reported (value, unit) when a device's own unit was converted."""
    target = t.fhir_unit(metric_name)
    reported = None
    if unit != target:
        try:
            converted = _round(convert(value, unit, target))
        except ValueError:
            pass  # no linear conversion (glucose mmol/L): keep the unit as stored, it is one of the metric's
        else:
            if unit != get_metric(metric_name).canonical_unit:
                reported = (value, unit)
            value, unit = converted, target
    return {"value": value, "unit": unit, "system": UCUM_SYSTEM, "code": unit}, reported


def _flag_text(flags: Mapping[str, Any]) -> str:
    parts = [name if value is True else f"{name}={value}" for name, value in sorted(flags.items())]
    return "Device status: " + ", ".join(parts)


def _interpretation(flags: Mapping[str, Any], metric: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"text": name.replace("_", " ")} for name in sorted(flags) if name in QUALITY_FLAGS and flags[name]
    ]
    rng = flags.get("pulse_rate_range")
    if metric == "pulse_rate" and rng in {"above", "below"}:
        code, display = ("H", "High") if rng == "above" else ("L", "Low")
        out.append({"coding": [t.coding(t.INTERPRETATION_SYSTEM, code, display)], "text": f"pulse rate {rng} range"})
    return out


def _status(flags: Mapping[str, Any]) -> str:
    return "preliminary" if any(flags.get(f) for f in PRELIMINARY_FLAGS) else "final"


def _base(
    anchor: ReadingRecord, flags: Mapping[str, Any], category: str, codings: list[dict[str, Any]]
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": str(anchor.reading_id),
        "identifier": [reading_uri(anchor.reading_id)],
        "status": _status(flags),
        "category": [
            {"coding": [t.coding(t.CATEGORY_SYSTEM, category, category.replace("-", " ").title())], "text": category}
        ],
        "code": {"coding": codings, "text": codings[0].get("display", codings[0]["code"])},
        "subject": {"reference": f"Patient/{anchor.patient_id}"},
        "effectiveDateTime": fhir_instant(anchor.measured_at),
    }
    if category == "vital-signs":
        obs["meta"] = {"profile": [t.VITALS_PROFILE]}
    if anchor.received_at is not None:
        obs["issued"] = fhir_instant(anchor.received_at)
    if anchor.device_id is not None:
        obs["device"] = {"reference": f"Device/{anchor.device_id}"}
    return obs


def _annotate(obs: dict[str, Any], flags: Mapping[str, Any], metric: str, notes: list[str]) -> None:
    """Status flags -> interpretation, note and the lossless extension."""
    shown = {k: v for k, v in flags.items() if k not in {REPORTED_VALUE, REPORTED_UNIT}}
    extensions: list[dict[str, Any]] = obs.setdefault("extension", [])
    if shown:
        extensions.append(
            {"url": t.EXT_DEVICE_FLAGS, "valueString": json.dumps(shown, sort_keys=True, separators=(",", ":"))}
        )
        notes.insert(0, _flag_text(shown))
        interpretation = _interpretation(shown, metric)
        if interpretation:
            obs["interpretation"] = interpretation
        site = shown.get("temperature_type")
        if metric == "body_temperature" and isinstance(site, str):
            obs["bodySite"] = {"text": site}
    if notes:
        obs["note"] = [{"text": n} for n in notes]
    if not extensions:
        del obs["extension"]


def _reported(flags: Mapping[str, Any], reported: tuple[float, str] | None) -> tuple[float, str] | None:
    """The value as the sender reported it: converted now, or already at import (kept in the flags)."""
    if isinstance(flags.get(REPORTED_VALUE), int | float) and isinstance(flags.get(REPORTED_UNIT), str):
        return float(flags[REPORTED_VALUE]), str(flags[REPORTED_UNIT])
    return reported


def _reported_ext(reported: tuple[float, str]) -> dict[str, Any]:
    value, unit = reported
    return {"url": t.EXT_REPORTED, "valueQuantity": {"value": value, "unit": unit, "system": UCUM_SYSTEM, "code": unit}}


def observation(anchor: ReadingRecord, companions: Sequence[ReadingRecord] = ()) -> dict[str, Any]:
    """The Observation of ``anchor`` (a reading with :func:`is_anchor`); ``companions``: its panel's other readings."""
    metric = get_metric(anchor.metric)
    if anchor.metric in t.BP_COMPONENTS:
        return _panel(anchor, companions)
    flags = dict(anchor.flags or {})
    quantity, converted = _quantity(anchor.metric, anchor.value, anchor.unit)
    obs = _base(anchor, flags, t.category(metric), t.metric_codings(metric, quantity["code"]))
    obs["valueQuantity"] = quantity
    notes: list[str] = []
    reported = _reported(flags, converted)
    if reported is not None:
        obs["extension"] = [_reported_ext(reported)]
        notes.append(f"Reported as {reported[0]:g} {reported[1]}, converted to {quantity['unit']}")
    _annotate(obs, flags, anchor.metric, notes)
    return obs


def _panel(anchor: ReadingRecord, companions: Sequence[ReadingRecord]) -> dict[str, Any]:
    members = {anchor.metric: anchor}
    for c in companions:
        if c.metric in t.BP_COMPONENTS and c.group_id == anchor.group_id:
            members.setdefault(c.metric, c)
    flags: dict[str, Any] = {}
    for name in reversed(t.BP_COMPONENTS):
        if name in members:
            flags.update(members[name].flags or {})
    obs = _base(anchor, flags, "vital-signs", t.panel_codings())
    obs["meta"] = {"profile": [t.VITALS_PROFILE, t.BP_PROFILE]}
    components: list[dict[str, Any]] = []
    notes: list[str] = []
    exts: list[dict[str, Any]] = []
    for name in t.BP_COMPONENTS:
        metric = get_metric(name)
        comp: dict[str, Any] = {"code": {"coding": t.metric_codings(metric), "text": metric.display_en}}
        r = members.get(name)
        if r is None:
            if name == "mean_arterial_pressure":
                continue
            comp["dataAbsentReason"] = {
                "coding": [t.coding("http://terminology.hl7.org/CodeSystem/data-absent-reason", "error", "Error")],
                "text": str(flags.get(f"{name}_unavailable", "not measured")),
            }
        else:
            quantity, converted = _quantity(name, r.value, r.unit)
            comp["valueQuantity"] = quantity
            comp["extension"] = [{"url": t.EXT_READING_ID, "valueString": str(r.reading_id)}]
            reported = _reported(r.flags or {}, converted)
            if reported is not None:
                comp["extension"].append(_reported_ext(reported))
                notes.append(f"{metric.display_en} reported as {reported[0]:g} {reported[1]}")
        components.append(comp)
    obs["component"] = components
    if anchor.group_id is not None:
        exts.append({"url": t.EXT_GROUP, "valueString": str(anchor.group_id)})
    obs["extension"] = exts
    _annotate(obs, flags, anchor.metric, notes)
    return obs


def observations(readings: Iterable[ReadingRecord]) -> list[dict[str, Any]]:
    """Observations of ``readings`` (in their order), blood pressure folded into panels by group id."""
    rows = list(readings)
    by_group: dict[uuid.UUID, list[ReadingRecord]] = {}
    for r in rows:
        if r.group_id is not None and r.metric in t.BP_COMPONENTS:
            by_group.setdefault(r.group_id, []).append(r)
    return [observation(r, by_group.get(r.group_id, []) if r.group_id else []) for r in rows if is_anchor(r)]


# ----------------------------------------------------------------------------------------------------------- import


@dataclass(frozen=True, slots=True)
class ParsedReading:
    """A reading carried by an imported Observation, in the metric's canonical unit (or another allowed one)."""

    reading_id: uuid.UUID
    metric: str
    value: float
    unit: str
    measured_at: datetime
    received_at: datetime | None
    group_id: uuid.UUID | None
    flags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ParsedObservation:
    """What :func:`parse_observation` found: the references to resolve and the readings."""

    patient_ref: str
    device_ref: str | None
    identifiers: tuple[uuid.UUID, ...]
    readings: tuple[ParsedReading, ...]


def _bad(message: str, where: str) -> InvalidResourceError:
    return InvalidResourceError(message, expression=where)


def parse_instant(value: object, where: str) -> datetime:
    """A FHIR dateTime/instant with a time and an offset -> aware datetime."""
    if not isinstance(value, str) or "T" not in value:
        raise _bad("must be a dateTime with a time and a UTC offset", where)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"{value[:40]!r} is not a valid dateTime", where) from None
    if at.tzinfo is None:
        raise _bad("must carry a UTC offset", where)
    return at


def reading_id_of(identifier: Mapping[str, Any]) -> uuid.UUID:
    """``urn:uuid:X`` -> X; any other identifier -> uuid5 of ``system|value`` (stable, so a replay is a no-op)."""
    value = str(identifier.get("value", ""))
    if value.startswith("urn:uuid:"):
        try:
            return uuid.UUID(value[9:])
        except ValueError:
            pass
    return uuid.uuid5(ID_NAMESPACE, f"{identifier.get('system', '')}|{value}")


def _value(q: object, metric: str, where: str) -> tuple[float, str, dict[str, Any]]:
    """``valueQuantity`` -> (value, unit, flags recording the reported value when converted)."""
    if not isinstance(q, Mapping):
        raise _bad("valueQuantity is required", where)
    value = q.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad("value must be a finite number", f"{where}.value")
    system = q.get("system")
    code = q.get("code")
    if system is not None and system != UCUM_SYSTEM:
        raise _bad(f"unit system must be {UCUM_SYSTEM}", f"{where}.system")
    if not isinstance(code, str):
        raise _bad("a UCUM unit code is required", f"{where}.code")
    m = METRICS[metric]
    if code not in m.units:
        raise _bad(f"wrong unit {code[:40]!r} for {metric} (expected {', '.join(m.units)})", f"{where}.code")
    canonical = m.canonical_unit
    if code == canonical:
        return float(value), code, {}
    try:
        converted = _round(convert(float(value), code, canonical))
    except ValueError:
        return float(value), code, {}  # an allowed unit without linear conversion (glucose mmol/L)
    if code == t.fhir_unit(metric):
        return converted, canonical, {}  # the profile's own unit (body height in cm): nothing to remember
    return converted, canonical, {REPORTED_VALUE: float(value), REPORTED_UNIT: code}


def _flags(resource: Mapping[str, Any], where: str) -> dict[str, Any]:
    for ext in resource.get("extension") or ():
        if isinstance(ext, Mapping) and ext.get("url") == t.EXT_DEVICE_FLAGS:
            try:
                flags = json.loads(str(ext.get("valueString")))
            except ValueError:
                raise _bad("device-flags must be a JSON object", f"{where}.extension") from None
            if not isinstance(flags, dict) or "\x00" in json.dumps(flags):
                raise _bad("device-flags must be a JSON object", f"{where}.extension")
            return flags
    return {}


def _reported_of(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The value as first reported (:data:`EXT_REPORTED`), carried by an Observation that tbib exported."""
    for ext in resource.get("extension") or ():
        if isinstance(ext, Mapping) and ext.get("url") == t.EXT_REPORTED:
            q = ext.get("valueQuantity")
            if isinstance(q, Mapping) and isinstance(q.get("value"), int | float) and isinstance(q.get("code"), str):
                return {REPORTED_VALUE: float(q["value"]), REPORTED_UNIT: q["code"]}
    return {}


def _ext_uuid(resource: Mapping[str, Any], url: str) -> uuid.UUID | None:
    for ext in resource.get("extension") or ():
        if isinstance(ext, Mapping) and ext.get("url") == url:
            value = str(ext.get("valueString", ext.get("valueUuid", "")))
            try:
                return uuid.UUID(value.removeprefix("urn:uuid:"))
            except ValueError:
                return None
    return None


def _codings(concept: object, where: str) -> list[Mapping[str, Any]]:
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    if not isinstance(codings, list) or not codings or not all(isinstance(c, Mapping) for c in codings):
        raise _bad("code.coding is required", where)
    return codings


def parse_observation(obs: Mapping[str, Any], *, now: datetime, where: str = "Observation") -> ParsedObservation:
    """The readings of one Observation (pure: ``now`` bounds future times); :class:`InvalidResourceError` otherwise."""
    if obs.get("resourceType") != "Observation":
        raise _bad("resourceType must be Observation", f"{where}.resourceType")
    status = obs.get("status")
    if status not in _ACCEPTED_STATUS:
        raise _bad(f"status {str(status)[:20]!r} cannot be imported", f"{where}.status")
    subject = obs.get("subject")
    patient_ref = subject.get("reference") if isinstance(subject, Mapping) else None
    if not isinstance(patient_ref, str):
        raise _bad("subject.reference (Patient/<id>) is required", f"{where}.subject")
    device = obs.get("device")
    device_ref = device.get("reference") if isinstance(device, Mapping) else None
    if device is not None and not isinstance(device_ref, str):
        raise _bad("device.reference must be a string", f"{where}.device")
    raw_time = obs.get("effectiveDateTime", obs.get("effectiveInstant"))
    measured = parse_instant(raw_time, f"{where}.effectiveDateTime")
    if measured > now + _MAX_FUTURE:
        raise _bad("effectiveDateTime is more than 24 h in the future", f"{where}.effectiveDateTime")
    received = parse_instant(obs["issued"], f"{where}.issued") if obs.get("issued") is not None else None
    idents = obs.get("identifier") or []
    if not isinstance(idents, list) or not all(isinstance(i, Mapping) for i in idents):
        raise _bad("identifier must be a list", f"{where}.identifier")
    ids = tuple(reading_id_of(i) for i in idents if i.get("value"))
    flags = _flags(obs, where)
    codings = _codings(obs.get("code"), f"{where}.code")
    if t.is_panel(codings):
        readings = _parse_panel(obs, ids, measured, received, flags, raw_time, where)
    else:
        metric = t.metric_of(codings)
        if metric is None:
            raise _bad("no known LOINC, MDC or tbib code in code.coding", f"{where}.code")
        value, unit, reported = _value(obs.get("valueQuantity"), metric, f"{where}.valueQuantity")
        rid = ids[0] if ids else _content_id(patient_ref, metric, str(raw_time), value, unit)
        reported = reported or _reported_of(obs)
        readings = (ParsedReading(rid, metric, value, unit, measured, received, None, {**flags, **reported}),)
    return ParsedObservation(patient_ref, device_ref, ids, readings)


def _content_id(patient_ref: str, metric: str, at: str, value: float, unit: str) -> uuid.UUID:
    """Without an identifier the content names the reading (as the PHD IG does): a replay maps to the same id."""
    return uuid.uuid5(ID_NAMESPACE, f"{patient_ref}|{metric}|{at}|{value!r}|{unit}")


def _parse_panel(
    obs: Mapping[str, Any],
    ids: tuple[uuid.UUID, ...],
    measured: datetime,
    received: datetime | None,
    flags: dict[str, Any],
    raw_time: object,
    where: str,
) -> tuple[ParsedReading, ...]:
    components = obs.get("component")
    if not isinstance(components, list) or not components:
        raise _bad("a blood pressure panel needs components", f"{where}.component")
    base = ids[0] if ids else _content_id(str(obs["subject"]["reference"]), "bp", str(raw_time), 0.0, "")
    group = _ext_uuid(obs, t.EXT_GROUP) or uuid.uuid5(base, "group")
    out: list[ParsedReading] = []
    for i, comp in enumerate(components):
        cw = f"{where}.component[{i}]"
        if not isinstance(comp, Mapping):
            raise _bad("component must be an object", cw)
        metric = t.metric_of(_codings(comp.get("code"), f"{cw}.code"))
        if metric not in t.BP_COMPONENTS:
            raise _bad("component code must be 8480-6, 8462-4 or 8478-0", f"{cw}.code")
        if comp.get("valueQuantity") is None and comp.get("dataAbsentReason") is not None:
            continue
        value, unit, reported = _value(comp.get("valueQuantity"), metric, f"{cw}.valueQuantity")
        reported = reported or _reported_of(comp)
        rid = _ext_uuid(comp, t.EXT_READING_ID) or (base if metric == "systolic_bp" else uuid.uuid5(base, metric))
        out.append(ParsedReading(rid, metric, value, unit, measured, received, group, {**flags, **reported}))
    if not out:
        raise _bad("the panel has no component value", f"{where}.component")
    if len({r.metric for r in out}) != len(out):
        raise _bad("a component code appears twice", f"{where}.component")
    return tuple(out)
