"""Pure building blocks of the clinician-facing patient views (no I/O): NEWS2 from latest readings, acuity order.

Contract
- :func:`news2_from_latest` scores NEWS2 from the newest value of each parameter measured within ``freshness`` of
  ``now`` (older values count as missing, never as normal). Pulse is the newest of ``pulse_rate`` and
  ``heart_rate``. Implausible values are left out (listed as missing) rather than failing the whole list.
- :func:`acuity_key` orders patients "who needs attention now" first: highest open alert severity, then NEWS2 total
  (a partial score is a lower bound), then the number of open alerts, then the oldest "no data since", then name.
- Times are aware UTC datetimes; ages are whole seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from teleconsult.alerts.errors import InvalidObservationError
from teleconsult.alerts.news2 import News2Result, Observations, score
from teleconsult.alerts.rules import DEFAULT_THRESHOLDS

#: Observations older than this are missing for NEWS2 (same default as the alert engine).
NEWS2_FRESHNESS: Final = timedelta(hours=1)
#: A gateway whose newest reading is younger than this is shown as sending data.
ONLINE_WINDOW: Final = timedelta(minutes=3)
#: Metrics the dashboard charts, in display order.
CHART_METRICS: Final[tuple[str, ...]] = (
    "heart_rate",
    "pulse_rate",
    "spo2",
    "systolic_bp",
    "diastolic_bp",
    "body_temperature",
    "body_weight",
    "glucose",
    "respiratory_rate",
)
SEVERITY_RANK: Final[dict[str, int]] = {"low": 1, "medium": 2, "high": 3}
RISK_RANK: Final[dict[str, int]] = {"low": 0, "low-medium": 1, "medium": 2, "high": 3}


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest value of one metric of one patient."""

    metric: str
    value: float
    unit: str
    measured_at: datetime
    device_id: str | None = None


def news2_from_latest(
    latest: Mapping[str, Latest],
    now: datetime,
    *,
    spo2_scale: int = 1,
    supplemental_oxygen: bool | None = None,
    freshness: timedelta = NEWS2_FRESHNESS,
) -> News2Result:
    """NEWS2 of the fresh latest observations (see the module contract)."""

    def fresh(metric: str) -> Latest | None:
        item = latest.get(metric)
        if item is None or now - item.measured_at > freshness:
            return None
        return item

    pulses = [p for p in (fresh("pulse_rate"), fresh("heart_rate")) if p is not None]
    pulse = max(pulses, key=lambda p: p.measured_at) if pulses else None
    values: dict[str, Any] = {
        "respiratory_rate": _value(fresh("respiratory_rate")),
        "spo2": _value(fresh("spo2")),
        "systolic_bp": _value(fresh("systolic_bp")),
        "pulse": _value(pulse),
        "temperature": _value(fresh("body_temperature")),
    }
    oxygen = fresh("supplemental_oxygen")
    on_oxygen = (oxygen.value >= 0.5) if oxygen is not None else supplemental_oxygen
    while True:
        try:
            return score(Observations(supplemental_oxygen=on_oxygen, spo2_scale=spo2_scale, **values))
        except InvalidObservationError as exc:
            if values.get(exc.field) is None:
                raise
            values[exc.field] = None  # implausible: treat as not measured


def _value(item: Latest | None) -> float | None:
    return None if item is None else item.value


def acuity_key(
    *, max_severity: str | None, news2_total: int, open_alerts: int, no_data_since: datetime | None, name: str
) -> tuple[Any, ...]:
    """Sort key: ascending order puts the most urgent patient first."""
    severity = SEVERITY_RANK.get(max_severity or "", 0)
    stale = no_data_since.timestamp() if no_data_since is not None else float("inf")
    return (-severity, -news2_total, -open_alerts, stale, name.casefold())


def age_s(now: datetime, at: datetime | None) -> int | None:
    """Whole seconds since ``at`` (never negative), or None."""
    if at is None:
        return None
    return max(0, int((now - at).total_seconds()))


def thresholds() -> dict[str, list[dict[str, Any]]]:
    """The default alert thresholds per metric, for drawing on charts: ``metric -> [{severity, low, high}]``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rule in DEFAULT_THRESHOLDS:
        for metric in rule.metrics:
            out.setdefault(metric, []).extend(
                {"severity": lv.severity.value, "low": lv.low, "high": lv.high} for lv in rule.levels
            )
    return out


def overview_row(
    *,
    patient: Mapping[str, Any],
    latest: Mapping[str, Latest],
    alerts: Mapping[str, Any] | None,
    gateways: Sequence[Mapping[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """One row of the patient list as JSON (``patient``: id, display_name, birth_date, sex)."""
    result = news2_from_latest(latest, now)
    newest = max((item.measured_at for item in latest.values()), default=None)
    online = newest is not None and now - newest <= ONLINE_WINDOW
    gateway_offline = bool(alerts and "gateway_offline" in alerts.get("rules", ()))
    seen = [datetime.fromisoformat(g["last_seen_at"]) for g in gateways if g.get("last_seen_at")]
    gateway_recent = bool(seen) and now - max(seen) <= ONLINE_WINDOW
    return {
        "id": str(patient["id"]),
        "display_name": patient["display_name"],
        "birth_date": patient["birth_date"].isoformat() if patient.get("birth_date") else None,
        "sex": patient.get("sex"),
        "news2": result.to_json(),
        "open_alerts": int(alerts["count"]) if alerts else 0,
        "max_severity": alerts["max_severity"] if alerts else None,
        "alert_rules": sorted(alerts["rules"]) if alerts else [],
        "latest": {
            m: {
                "value": item.value,
                "unit": item.unit,
                "measured_at": item.measured_at.isoformat(),
                "age_s": age_s(now, item.measured_at),
            }
            for m, item in sorted(latest.items())
        },
        "last_data_at": newest.isoformat() if newest else None,
        "no_data_s": age_s(now, newest),
        "gateways": [dict(g) for g in gateways],
        "connectivity": _connectivity(
            gateway_offline=gateway_offline, online=online, gateway_recent=gateway_recent, has_data=newest is not None
        ),
    }


def _connectivity(*, gateway_offline: bool, online: bool, gateway_recent: bool, has_data: bool) -> str:
    """offline (the engine says the gateway is gone), online (fresh readings), idle (the gateway sends batches but no
    fresh measurement: the patient did not measure), stale (neither), never (no data at all)."""
    if gateway_offline:
        return "offline"
    if online:
        return "online"
    if gateway_recent:
        return "idle"
    return "stale" if has_data else "never"


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in acuity order (:func:`acuity_key`)."""

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        last = row["last_data_at"]
        return acuity_key(
            max_severity=row["max_severity"],
            news2_total=int(row["news2"]["total"]),
            open_alerts=int(row["open_alerts"]),
            no_data_since=datetime.fromisoformat(last) if last else None,
            name=str(row["display_name"]),
        )

    return sorted(rows, key=key)
