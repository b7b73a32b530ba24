"""The metric vocabulary: every clinical quantity tbib stores, with its LOINC code, its IEEE 11073-10101 (MDC) code
and its UCUM units.

Contract: metric names are the ``metric`` of readings everywhere (MQTT payloads, the ``readings`` table, alerts, FHIR).
``units[0]`` is the canonical UCUM unit; the others are accepted as reported by devices (never ``bpm``). Sources:
FHIR R4 vital signs profile (LOINC), HL7 Personal Health Device IG / ISO/IEEE 11073-10101 nomenclature (MDC, system
``urn:iso:std:iso:11073:10101``). ``mdc`` is None where no code is assigned with confidence. A metric without a standard
LOINC code (``loinc == ""``: cuff pressure, RR interval, pulse amplitude index) is coded in tbib's own CodeSystem
(:data:`TBIB_METRIC_SYSTEM`, code = the metric name): :attr:`Metric.primary_coding` never gives an empty coding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from devices.errors import UnknownMetricError

LOINC_SYSTEM: Final = "http://loinc.org"
MDC_SYSTEM: Final = "urn:iso:std:iso:11073:10101"
UCUM_SYSTEM: Final = "http://unitsofmeasure.org"
#: tbib's CodeSystem for metrics that have no standard LOINC code (code = metric name, display = ``display_en``).
TBIB_METRIC_SYSTEM: Final = "https://tbib.ma/fhir/CodeSystem/metric"


@dataclass(frozen=True, slots=True)
class Metric:
    """One clinical quantity."""

    name: str
    display_en: str
    display_fr: str
    loinc: str
    """Primary LOINC code ("" when none is assigned)."""
    loinc_display: str
    mdc: int | None
    """IEEE 11073-10101 code of the usual source device."""
    units: tuple[str, ...]
    """UCUM codes; the first is canonical."""
    fhir_vital_sign: bool
    """Part of the FHIR R4 vital signs profile."""
    extra_loinc: tuple[str, ...] = ()
    """Additional LOINC codes (e.g. SpO2 by pulse oximetry 59408-5, glucose in moles 15074-8)."""
    other_mdc: tuple[int, ...] = ()
    """Other MDC codes for the same quantity from other device types."""

    @property
    def canonical_unit(self) -> str:
        """``units[0]``."""
        return self.units[0]

    @property
    def primary_coding(self) -> tuple[str, str, str]:
        """``(system, code, display)``: LOINC when assigned, else tbib's CodeSystem (never an empty code)."""
        if self.loinc:
            return (LOINC_SYSTEM, self.loinc, self.loinc_display)
        return (TBIB_METRIC_SYSTEM, self.name, self.display_en)


_METRICS: tuple[Metric, ...] = (
    Metric(
        "heart_rate", "Heart rate", "Fréquence cardiaque", "8867-4", "Heart rate", 147842, ("/min",), True,
        other_mdc=(149530, 149546),
    ),
    Metric(
        "pulse_rate", "Pulse rate", "Fréquence du pouls", "8867-4", "Heart rate", 149530, ("/min",), True,
        other_mdc=(149546,),
    ),
    Metric(
        "spo2", "Oxygen saturation (SpO2)", "Saturation en oxygène (SpO2)", "2708-6",
        "Oxygen saturation in Arterial blood", 150456, ("%",), True, extra_loinc=("59408-5",),
    ),
    Metric(
        "systolic_bp", "Systolic blood pressure", "Pression artérielle systolique", "8480-6",
        "Systolic blood pressure", 150021, ("mm[Hg]", "kPa"), True, extra_loinc=("85354-9",),
    ),
    Metric(
        "diastolic_bp", "Diastolic blood pressure", "Pression artérielle diastolique", "8462-4",
        "Diastolic blood pressure", 150022, ("mm[Hg]", "kPa"), True, extra_loinc=("85354-9",),
    ),
    Metric(
        "mean_arterial_pressure", "Mean arterial pressure", "Pression artérielle moyenne", "8478-0",
        "Mean blood pressure", 150023, ("mm[Hg]", "kPa"), False,
    ),
    Metric(
        "cuff_pressure", "Cuff pressure", "Pression du brassard", "", "", 150300, ("mm[Hg]", "kPa"), False,
    ),
    Metric(
        "body_temperature", "Body temperature", "Température corporelle", "8310-5", "Body temperature", 150364,
        ("Cel", "[degF]"), True,
    ),
    Metric(
        "body_weight", "Body weight", "Poids", "29463-7", "Body weight", 188736, ("kg", "[lb_av]"), True,
    ),
    Metric(
        "body_height", "Body height", "Taille", "8302-2", "Body height", 188740, ("m", "[in_i]", "cm"), True,
    ),
    Metric(
        "bmi", "Body mass index", "Indice de masse corporelle", "39156-5", "Body mass index (BMI) [Ratio]", 188752,
        ("kg/m2",), True,
    ),
    Metric(
        "glucose", "Blood glucose", "Glycémie", "2339-0", "Glucose [Mass/volume] in Blood", 160368,
        ("mg/dL", "mmol/L"), False, extra_loinc=("15074-8",),
    ),
    Metric(
        "respiratory_rate", "Respiratory rate", "Fréquence respiratoire", "9279-1", "Respiratory rate", 151562,
        ("/min",), True,
    ),
    Metric("rr_interval", "RR interval", "Intervalle RR", "", "", None, ("s",), False),
    Metric(
        "energy_expended", "Energy expended", "Énergie dépensée", "41981-2", "Calories burned", None, ("kJ",), False,
    ),
    Metric(
        "pulse_amplitude_index", "Pulse amplitude index", "Indice d'amplitude du pouls", "", "", 150448, ("%",), False,
    ),
)  # fmt: skip

METRICS: Mapping[str, Metric] = MappingProxyType({m.name: m for m in _METRICS})


def get_metric(name: str) -> Metric:
    """The metric called ``name``; :class:`~devices.errors.UnknownMetricError` otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise UnknownMetricError(name) from None


def is_valid_unit(metric_name: str, unit: str) -> bool:
    """True when ``unit`` is one of the metric's UCUM units (False for unknown metrics)."""
    metric = METRICS.get(metric_name)
    return metric is not None and unit in metric.units


# Linear conversions between the units above: (from, to) -> (factor, offset), value_to = value_from * factor + offset.
_MMHG_PER_KPA: Final = 760.0 / 101.325
_CONVERSIONS: Final[dict[tuple[str, str], tuple[float, float]]] = {
    ("kPa", "mm[Hg]"): (_MMHG_PER_KPA, 0.0),
    ("mm[Hg]", "kPa"): (1.0 / _MMHG_PER_KPA, 0.0),
    ("[degF]", "Cel"): (5.0 / 9.0, -32.0 * 5.0 / 9.0),
    ("Cel", "[degF]"): (9.0 / 5.0, 32.0),
    ("[lb_av]", "kg"): (0.45359237, 0.0),
    ("kg", "[lb_av]"): (1.0 / 0.45359237, 0.0),
    ("[in_i]", "m"): (0.0254, 0.0),
    ("m", "[in_i]"): (1.0 / 0.0254, 0.0),
    ("cm", "m"): (0.01, 0.0),
    ("m", "cm"): (100.0, 0.0),
}


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert between the UCUM units of one metric (mg/dL <-> mmol/L is refused: it depends on the molar mass).

    Raises ``ValueError`` for an unsupported pair.
    """
    if from_unit == to_unit:
        return value
    try:
        factor, offset = _CONVERSIONS[(from_unit, to_unit)]
    except KeyError:
        raise ValueError(f"no conversion from {from_unit!r} to {to_unit!r}") from None
    return value * factor + offset


def to_canonical(metric_name: str, value: float, unit: str) -> float:
    """``value`` in the metric's canonical unit (glucose in mmol/L stays a ValueError: convert it explicitly)."""
    return convert(value, unit, get_metric(metric_name).canonical_unit)
