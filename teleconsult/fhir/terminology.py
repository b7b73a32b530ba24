"""Code systems, identifier systems and the metric <-> coding tables of the FHIR mapping (pure).

Codes come from :mod:`devices.codes` (LOINC, MDC ``urn:iso:std:iso:11073:10101``, UCUM; tbib's CodeSystem for metrics
without a LOINC code). Blood pressure is the FHIR vital-signs panel 85354-9 (MDC 150020) with components systolic
8480-6, diastolic 8462-4 and mean 8478-0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from devices.codes import LOINC_SYSTEM, MDC_SYSTEM, METRICS, TBIB_METRIC_SYSTEM, Metric

FHIR_VERSION: Final = "4.0.1"
BASE: Final = "https://tbib.ma/fhir"
#: Identifier system of uuids (``value = "urn:uuid:..."``): reading ids, tbib patient ids.
URI_SYSTEM: Final = "urn:ietf:rfc:3986"
#: Moroccan national identity card (CIN) number. Deployments may register more systems in ``patient_identifiers``.
CIN_SYSTEM: Final = f"{BASE}/sid/cin"
#: Bluetooth device address (EUI-48), as in the HL7 PHD IG.
BLUETOOTH_SYSTEM: Final = "http://hl7.org/fhir/sid/eui-48/bluetooth"
GATEWAY_SYSTEM: Final = f"{BASE}/sid/gateway-id"
VITALS_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
BP_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/bp"
CATEGORY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
FLAG_CATEGORY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/flag-category"
ALERT_RULE_SYSTEM: Final = f"{BASE}/CodeSystem/alert-rule"
ALERT_SEVERITY_SYSTEM: Final = f"{BASE}/CodeSystem/alert-severity"
#: Extensions of tbib: the device's status flags (JSON), the value/unit as reported before conversion, the group id of
#: a measurement, the reading id of a panel component.
EXT_DEVICE_FLAGS: Final = f"{BASE}/StructureDefinition/device-flags"
EXT_REPORTED: Final = f"{BASE}/StructureDefinition/reported-quantity"
EXT_GROUP: Final = f"{BASE}/StructureDefinition/measurement-group"
EXT_READING_ID: Final = f"{BASE}/StructureDefinition/reading-id"

BP_PANEL_LOINC: Final = "85354-9"
BP_PANEL_MDC: Final = 150020
#: Components of the panel, in order.
BP_COMPONENTS: Final = ("systolic_bp", "diastolic_bp", "mean_arterial_pressure")
#: Metrics folded into their group's panel (the systolic reading anchors it).
PANEL_MEMBERS: Final = frozenset(BP_COMPONENTS[1:])

#: Observation category per metric (vital-signs for the FHIR vital signs; glucose is a laboratory value).
_CATEGORY_OVERRIDES: Final = {"glucose": "laboratory", "energy_expended": "activity"}

#: MDC device specialization (IEEE 11073-104xx) of the ``devices.kind`` values.
DEVICE_KIND_MDC: Final[Mapping[str, tuple[int, str]]] = MappingProxyType(
    {
        "pulse_oximeter": (528388, "Pulse oximeter"),
        "heart_rate": (528390, "Heart rate monitor"),
        "blood_pressure": (528391, "Blood pressure monitor"),
        "thermometer": (528392, "Thermometer"),
        "scale": (528399, "Weighing scale"),
        "glucose": (528401, "Glucose meter"),
        "cgm": (528425, "Continuous glucose monitor"),
    }
)


#: Units that the R4 vital-signs profiles require where they differ from the store's canonical unit.
_FHIR_UNITS: Final = {"body_height": "cm"}


def fhir_unit(metric_name: str) -> str:
    """The unit of emitted Observations of a metric (body height: ``cm``, the R4 bodyheight profile's)."""
    return _FHIR_UNITS.get(metric_name) or METRICS[metric_name].canonical_unit


def category(metric: Metric) -> str:
    """The ``observation-category`` code of a metric's Observations."""
    if metric.fhir_vital_sign or metric.name == "mean_arterial_pressure":
        return "vital-signs"
    return _CATEGORY_OVERRIDES.get(metric.name, "exam")


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    """A FHIR ``Coding``."""
    out: dict[str, Any] = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def metric_codings(metric: Metric, unit: str | None = None) -> list[dict[str, Any]]:
    """Every coding of one value of ``metric`` (in ``unit``): primary (LOINC, or tbib's CodeSystem), then MDC.

    SpO2 also carries 59408-5 (by pulse oximetry); glucose in mmol/L is 15074-8 (moles/volume) instead of 2339-0.
    """
    system, code, display = metric.primary_coding
    if metric.name == "glucose" and unit == "mmol/L":
        code, display = "15074-8", "Glucose [Moles/volume] in Blood"
    out = [coding(system, code, display)]
    if metric.name == "spo2":
        out.append(coding(LOINC_SYSTEM, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"))
    if metric.mdc is not None:
        out.append(coding(MDC_SYSTEM, str(metric.mdc), metric.display_en))
    return out


def panel_codings() -> list[dict[str, Any]]:
    """Codings of the blood pressure panel."""
    return [
        coding(LOINC_SYSTEM, BP_PANEL_LOINC, "Blood pressure panel with all children optional"),
        coding(MDC_SYSTEM, str(BP_PANEL_MDC), "Blood pressure"),
    ]


def _index() -> dict[tuple[str, str], str]:
    """(system, code) -> metric name. MDC codes first win over LOINC's ambiguity (heart vs pulse rate)."""
    out: dict[tuple[str, str], str] = {}
    for m in METRICS.values():
        if m.mdc is not None:
            out.setdefault((MDC_SYSTEM, str(m.mdc)), m.name)
        for other in m.other_mdc:
            out.setdefault((MDC_SYSTEM, str(other)), "pulse_rate" if m.name == "heart_rate" else m.name)
        if m.loinc:
            out.setdefault((LOINC_SYSTEM, m.loinc), m.name)
        out.setdefault((TBIB_METRIC_SYSTEM, m.name), m.name)
    for m in METRICS.values():
        for extra in m.extra_loinc:
            if extra != BP_PANEL_LOINC:
                out.setdefault((LOINC_SYSTEM, extra), m.name)
    return out


#: (system, code) -> metric name, for Observations sent to the server.
CODE_TO_METRIC: Final[Mapping[tuple[str, str], str]] = MappingProxyType(_index())


def metric_of(codings: Iterable[Mapping[str, Any]]) -> str | None:
    """The metric named by a ``CodeableConcept.coding`` list: an MDC match wins, then LOINC, then tbib's system."""
    found: dict[str, str] = {}
    for c in codings:
        name = CODE_TO_METRIC.get((str(c.get("system")), str(c.get("code"))))
        if name is not None:
            found.setdefault(str(c.get("system")), name)
    for system in (MDC_SYSTEM, LOINC_SYSTEM, TBIB_METRIC_SYSTEM):
        if system in found:
            return found[system]
    return None


def is_panel(codings: Iterable[Mapping[str, Any]]) -> bool:
    """True when the codings name the blood pressure panel."""
    return any(
        (c.get("system"), str(c.get("code"))) in {(LOINC_SYSTEM, BP_PANEL_LOINC), (MDC_SYSTEM, str(BP_PANEL_MDC))}
        for c in codings
    )


def metrics_for_token(system: str | None, code: str) -> frozenset[str]:
    """Search ``code=[system|]code`` -> the metrics whose Observations carry that code (empty when none).

    The panel code selects every blood pressure metric (their readings are folded into panels); the component codes
    8480-6/8462-4/8478-0 are not Observation codes (as in FHIR: search them with ``component-code``, not implemented).
    """
    if code in {BP_PANEL_LOINC, str(BP_PANEL_MDC)} and system in {None, LOINC_SYSTEM, MDC_SYSTEM}:
        return frozenset(BP_COMPONENTS)
    names = set()
    for m in METRICS.values():
        if m.name in BP_COMPONENTS:
            continue
        for units in {None, *m.units}:
            for c in metric_codings(m, units):
                if c["code"] == code and (system is None or c["system"] == system):
                    names.add(m.name)
    return frozenset(names)
