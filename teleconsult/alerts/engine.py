"""The alert engine: a pure state machine in the style of aioquic's ``QuicConnection``.

Inputs: :meth:`Engine.receive` (a reading), :meth:`Engine.gateway_status`, :meth:`Engine.handle_timer`, clinician
actions (:meth:`Engine.acknowledge`, :meth:`Engine.resolve`) and :meth:`Engine.restore` at start.
Outputs: :meth:`next_event`
drains :class:`AlertEvent` values; :meth:`get_timer` is the next time ``handle_timer`` must be called. No I/O, no clock:
every input carries ``now``.

Rules (names are the alert's ``rule``)
- thresholds (``rules.ThresholdRule``; per-patient overrides by name; hysteresis; minimum duration);
- ``news2``: NEWS2 over the newest observation of each parameter measured within ``news2_freshness``; raised for risk
  low-medium (severity low), medium, high; a partial score is marked in ``details`` and never clears an alert raised on
  a parameter that is now missing (missing is not normal). Scored once per patient for a run of consecutive
  :meth:`Engine.receive` calls, before any other call (a batch of readings costs one score per patient);
- trends (``rules.TrendRule``);
- ``no_data:<metric>``: the patient did not measure within the expected interval while the gateway is online;
- ``gateway_offline``: the patient's gateway has been offline for ``gateway_offline_after`` (no-data alerts are held
  back meanwhile, and re-armed with ``flush_grace`` when it returns).

Which readings each rule uses (the service feeds every committed reading, each batch whole in ``measured_at`` order,
:mod:`teleconsult.alerts.feed`):
- thresholds: every reading that is the newest of its metric when it arrives; in an ordered batch that is each one in
  turn (SpO2 97, 85, 97 enters the level at 85; with a minimum duration it starts a pending alert that the next 97
  cancels). A late, older reading is history: it does not drive thresholds;
- trends: every reading goes into the window (late ones too); the rule is evaluated on each newest one against the
  window's extreme (97, 85, 97 within 2 s raises ``spo2_falling`` and clears it);
- NEWS2: the newest observation of each parameter, scored once per run of :meth:`Engine.receive` calls (once per
  fetch of the feed): an intermediate value of one batch is not scored by NEWS2 (thresholds and trends see it);
- no-data: the newest ``measured_at`` of the metric.
One open alert per (patient, rule); a clinician's ``resolve`` closes it and the rule starts afresh.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from teleconsult.alerts import news2
from teleconsult.alerts.model import (
    AlertEvent,
    AlertKey,
    EventKind,
    OpenAlert,
    Reading,
    Severity,
    check_time,
    normalized,
)
from teleconsult.alerts.rules import NEWS2_METRICS, EngineConfig, PatientProfile, ThresholdRule, TrendRule
from teleconsult.alerts.timers import Timers
from teleconsult.alerts.window import Series

NEWS2_RULE: Final = "news2"
GATEWAY_OFFLINE_RULE: Final = "gateway_offline"
NO_DATA_PREFIX: Final = "no_data:"

_RISK_SEVERITY: Final[dict[news2.Risk, Severity | None]] = {
    news2.Risk.LOW: None,
    news2.Risk.LOW_MEDIUM: Severity.LOW,
    news2.Risk.MEDIUM: Severity.MEDIUM,
    news2.Risk.HIGH: Severity.HIGH,
}
_ACVPU: Final[tuple[news2.Consciousness, ...]] = tuple(news2.Consciousness)

# timer kinds
_PENDING: Final = "pending"
_NO_DATA: Final = "no_data"
_GATEWAY: Final = "gateway"
_ESCALATE: Final = "escalate"


@dataclass(slots=True)
class _Alert:
    severity: Severity
    raised_at: datetime
    acknowledged: bool = False
    escalated: bool = False
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    severity: Severity
    onset: datetime  # measured_at of the first reading of the condition
    details: Mapping[str, object]


@dataclass(slots=True)
class _Gateway:
    online: bool | None = None
    since: datetime | None = None
    patients: set[str] = field(default_factory=set)


def _iso(t: datetime) -> str:
    return t.isoformat()


def _threshold_details(r: Reading) -> dict[str, object]:
    return {
        "metric": r.metric,
        "value": r.value,
        "unit": r.unit,
        "measured_at": _iso(r.measured_at),
        "device_id": r.device_id,
    }


def _trend_details(trend: TrendRule, r: Reading, reference: float, change: float) -> dict[str, object]:
    return {
        "metric": r.metric,
        "value": r.value,
        "reference": reference,
        "change": round(change, 3),
        "window_s": trend.window.total_seconds(),
        "measured_at": _iso(r.measured_at),
    }


class Engine:
    """See the module docstring."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._events: deque[AlertEvent] = deque()
        self._alerts: dict[AlertKey, _Alert] = {}
        self._pending: dict[AlertKey, _Pending] = {}
        self._profiles: dict[str, PatientProfile] = {}
        self._monitor_start: dict[str, datetime] = {}
        self._latest: dict[tuple[str, str], tuple[datetime, float]] = {}  # (patient, metric) -> newest
        self._history: dict[tuple[str, str], Series] = {}
        self._news2_obs: dict[tuple[str, str], tuple[datetime, float]] = {}  # (patient, news2 param) -> newest
        self._news2_due: dict[str, datetime] = {}  # patients to score, with the ``now`` of their last reading
        self._patient_gateway: dict[str, str] = {}
        self._gateways: dict[str, _Gateway] = {}
        self._no_data_suppressed: set[AlertKey] = set()  # resolved by a clinician: wait for fresh data
        self._timers = Timers()
        self._by_metric: dict[str, list[ThresholdRule]] = {}
        for rule in self.config.thresholds:
            for metric in rule.metrics:
                self._by_metric.setdefault(metric, []).append(rule)
        self._trend_windows: dict[str, timedelta] = {}
        for trend in self.config.trends:
            self._trend_windows[trend.metric] = max(self._trend_windows.get(trend.metric, timedelta(0)), trend.window)

    # ---- outputs ------------------------------------------------------------------------------------------------

    def next_event(self) -> AlertEvent | None:
        """The oldest undrained event, or None."""
        self._settle()
        return self._events.popleft() if self._events else None

    def get_timer(self) -> datetime | None:
        """When :meth:`handle_timer` must next be called (None: no timer)."""
        self._settle()
        return self._timers.next()

    def open_alerts(self) -> dict[AlertKey, Severity]:
        """The open alerts and their severities (for inspection and tests)."""
        self._settle()
        return {k: a.severity for k, a in self._alerts.items()}

    def _settle(self) -> None:
        """Score NEWS2 once per patient for a run of consecutive :meth:`receive` calls (before any other call), on
        the newest observations: a batch of readings costs one score per patient, not one per reading."""
        while self._news2_due:
            pid = next(iter(self._news2_due))
            self._news2(pid, self._news2_due.pop(pid))

    # ---- configuration and restore ------------------------------------------------------------------------------

    def set_patient(self, profile: PatientProfile, now: datetime) -> None:
        """Configure (or reconfigure) a patient; monitoring for no-data starts at ``now`` if it had not started."""
        check_time("now", now)
        self._settle()
        self._profiles[profile.patient_id] = profile
        self._monitor_start.setdefault(profile.patient_id, now)
        if profile.gateway_id is not None:
            self._attach(profile.patient_id, profile.gateway_id)
        for metric in profile.expected_intervals:
            self._arm_no_data(profile.patient_id, metric, now)

    def restore(self, alerts: Iterable[OpenAlert], now: datetime) -> None:
        """Adopt the open alerts of the store (at start, before any reading): no event is emitted for them."""
        check_time("now", now)
        self._settle()
        for a in alerts:
            self._alerts[a.key] = _Alert(a.severity, a.raised_at, a.acknowledged, a.escalated, dict(a.details))
            self._arm_escalation(a.key)

    # ---- clinician actions --------------------------------------------------------------------------------------

    def acknowledge(self, key: AlertKey, now: datetime) -> bool:
        """A clinician acknowledged the alert: no escalation. False when no such open alert."""
        check_time("now", now)
        self._settle()
        alert = self._alerts.get(key)
        if alert is None:
            return False
        alert.acknowledged = True
        self._cancel(_ESCALATE, key)
        return True

    def resolve(self, key: AlertKey, now: datetime) -> bool:
        """A clinician resolved the alert: it is closed; the rule re-raises only on a new occurrence."""
        check_time("now", now)
        self._settle()
        if self._alerts.pop(key, None) is None:
            return False
        self._cancel(_ESCALATE, key)
        self._pending.pop(key, None)
        self._cancel(_PENDING, key)
        if key.rule.startswith(NO_DATA_PREFIX):
            self._no_data_suppressed.add(key)
        return True

    # ---- inputs -------------------------------------------------------------------------------------------------

    def receive(self, reading: Reading, now: datetime) -> None:
        """Feed one reading (any order; duplicates are harmless)."""
        check_time("now", now)
        check_time("measured_at", reading.measured_at)
        r = normalized(reading)
        pid, metric = r.patient_id, r.metric
        self._monitor_start.setdefault(pid, now)
        if r.gateway_id is not None:
            self._attach(pid, r.gateway_id)
        latest = self._latest.get((pid, metric))
        newest = latest is None or r.measured_at >= latest[0]
        if newest:
            self._latest[(pid, metric)] = (r.measured_at, r.value)
        if metric in self._trend_windows:
            self._add_history(pid, metric, r.measured_at, r.value)
        if not newest:
            return
        for rule in self._thresholds_for(pid, metric):
            self._threshold(rule, r, now)
        for trend in self.config.trends:
            if trend.metric == metric:
                self._trend(trend, r, now)
        if self.config.news2_enabled and metric in NEWS2_METRICS:
            param = NEWS2_METRICS[metric]  # pulse: the newer of heart_rate and pulse_rate
            held = self._news2_obs.get((pid, param))
            if held is None or r.measured_at >= held[0]:
                self._news2_obs[(pid, param)] = (r.measured_at, r.value)
            self._news2_due.pop(pid, None)  # re-inserted: patients are scored in the order of their last reading
            self._news2_due[pid] = now
        profile = self._profiles.get(pid)
        if profile is not None and metric in profile.expected_intervals:
            key = AlertKey(pid, NO_DATA_PREFIX + metric)
            self._no_data_suppressed.discard(key)
            if key in self._alerts and self._no_data_deadline(pid, metric) > now:
                self._close(key, now, {"metric": metric, "measured_at": _iso(r.measured_at)})
            self._arm_no_data(pid, metric, now)

    def gateway_status(self, gateway_id: str, online: bool, now: datetime) -> None:
        """The gateway's retained status topic changed (``online`` on connect, ``offline`` as its Last Will)."""
        check_time("now", now)
        self._settle()
        gw = self._gateways.setdefault(gateway_id, _Gateway())
        if gw.online is online:
            return
        gw.online, gw.since = online, now
        if not online:
            self._arm(_GATEWAY, gateway_id, now + self.config.gateway_offline_after)
            return
        self._cancel(_GATEWAY, gateway_id)
        for pid in sorted(gw.patients):
            key = AlertKey(pid, GATEWAY_OFFLINE_RULE)
            if key in self._alerts:
                self._close(key, now, {"gateway_id": gateway_id, "online_at": _iso(now)})
            profile = self._profiles.get(pid)
            for metric in profile.expected_intervals if profile else ():
                self._arm_no_data(pid, metric, now)

    def handle_timer(self, now: datetime) -> None:
        """Run every timer due at ``now``."""
        check_time("now", now)
        self._settle()
        for kind, key in self._timers.due(now):
            if kind == _PENDING:
                assert isinstance(key, AlertKey)
                pending = self._pending.pop(key, None)
                if pending is not None:
                    self._open(key, pending.severity, now, pending.details)
            elif kind == _ESCALATE:
                assert isinstance(key, AlertKey)
                self._escalate(key, now)
            elif kind == _NO_DATA:
                assert isinstance(key, AlertKey)
                self._no_data_due(key, now)
            elif kind == _GATEWAY:
                assert isinstance(key, str)
                self._gateway_offline_due(key, now)

    # ---- thresholds ---------------------------------------------------------------------------------------------

    def _thresholds_for(self, pid: str, metric: str) -> list[ThresholdRule]:
        rules = self._by_metric.get(metric, [])
        profile = self._profiles.get(pid)
        if profile is None or not profile.thresholds:
            return rules
        defaults = {r.name for r in rules}
        out = [profile.thresholds.get(r.name, r) for r in rules]
        out += [r for r in profile.thresholds.values() if metric in r.metrics and r.name not in defaults]
        return [r for r in out if r.levels and metric in r.metrics]

    def _threshold(self, rule: ThresholdRule, r: Reading, now: datetime) -> None:
        key = AlertKey(r.patient_id, rule.name)
        alert = self._alerts.get(key)
        severity = rule.evaluate(r.value, alert.severity if alert else None)
        # the details (an ISO time and a dict) are built only when something changes: most readings change nothing,
        # and at 10 000 readings/s building them for every one was the largest part of the engine's time (py-spy)
        if alert is not None:
            if severity is None:
                self._close(key, now, _threshold_details(r))
            elif severity is not alert.severity:
                self._update(key, severity, now, _threshold_details(r))
            return
        if severity is None:
            if self._pending.pop(key, None) is not None:
                self._cancel(_PENDING, key)
            return
        details = _threshold_details(r)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(severity, r.measured_at, details)
        else:
            pending.severity = max(pending.severity, severity, key=lambda s: s.rank)
            pending.details = details
        lasted = r.measured_at - pending.onset
        if lasted >= rule.min_duration:
            del self._pending[key]
            self._cancel(_PENDING, key)
            self._open(key, pending.severity, now, {**details, "onset": _iso(pending.onset)})
        else:
            pending.details = {**details, "onset": _iso(pending.onset)}
            self._arm(_PENDING, key, now + (rule.min_duration - lasted))

    # ---- trends -------------------------------------------------------------------------------------------------

    def _add_history(self, pid: str, metric: str, at: datetime, value: float) -> None:
        hist = self._history.get((pid, metric))
        if hist is None:
            hist = self._history[(pid, metric)] = Series(self._trend_windows[metric])
        hist.add(at, value)

    def _trend(self, trend: TrendRule, r: Reading, now: datetime) -> None:
        profile = self._profiles.get(r.patient_id)
        if trend.heart_failure_only and not (profile and profile.heart_failure):
            return
        key = AlertKey(r.patient_id, trend.name)
        hist = self._history.get((r.patient_id, r.metric))
        start = r.measured_at - trend.window
        # a fall is measured from the highest earlier value, a rise from the lowest (O(1) amortized: see window.py)
        reference = None if hist is None else hist.extreme(trend.name, start, r.measured_at, highest=trend.change < 0)
        if reference is None:
            return
        change = r.value - reference
        active = key in self._alerts
        if trend.triggered(change, active):
            if not active:
                self._open(key, trend.severity, now, _trend_details(trend, r, reference, change))
        elif active:
            self._close(key, now, _trend_details(trend, r, reference, change))

    # ---- NEWS2 --------------------------------------------------------------------------------------------------

    def _news2(self, pid: str, now: datetime) -> None:
        profile = self._profiles.get(pid)
        fresh_after = now - self.config.news2_freshness

        def obs(param: str) -> float | None:
            got = self._news2_obs.get((pid, param))
            return got[1] if got is not None and got[0] >= fresh_after else None

        oxygen_value = obs("supplemental_oxygen")
        oxygen = bool(oxygen_value) if oxygen_value is not None else (profile.supplemental_oxygen if profile else None)
        acvpu = obs("consciousness")
        level = _ACVPU[min(max(int(acvpu), 0), 4)] if acvpu is not None else None
        try:
            result = news2.score(
                news2.Observations(
                    respiratory_rate=obs("respiratory_rate"),
                    spo2=obs("spo2"),
                    supplemental_oxygen=oxygen,
                    systolic_bp=obs("systolic_bp"),
                    pulse=obs("pulse"),
                    consciousness=level,
                    temperature=obs("temperature"),
                    spo2_scale=profile.spo2_scale if profile else 1,
                )
            )
        except ValueError:
            return  # an implausible observation is not scored (the threshold rules still see it)
        key = AlertKey(pid, NEWS2_RULE)
        severity = _RISK_SEVERITY[result.risk]
        details: dict[str, object] = result.to_json()
        alert = self._alerts.get(key)
        if alert is None:
            if severity is not None:
                self._open(key, severity, now, details)
            return
        if severity is not None:
            self._update(key, severity, now, details)
            return
        previous = alert.details.get("components")
        scored = [name for name, pts in previous.items() if pts] if isinstance(previous, dict) else []
        if any(name not in result.components for name in scored):
            return  # a parameter that raised the alert is now missing: not a reason to clear
        self._close(key, now, details)

    # ---- no data and gateways -----------------------------------------------------------------------------------

    def _attach(self, pid: str, gateway_id: str) -> None:
        old = self._patient_gateway.get(pid)
        if old == gateway_id:
            return
        if old is not None:
            self._gateways[old].patients.discard(pid)
        self._patient_gateway[pid] = gateway_id
        self._gateways.setdefault(gateway_id, _Gateway()).patients.add(pid)

    def _no_data_deadline(self, pid: str, metric: str) -> datetime:
        profile = self._profiles[pid]
        latest = self._latest.get((pid, metric))
        since = latest[0] if latest is not None else self._monitor_start[pid]
        deadline = since + profile.expected_intervals[metric] + self.config.no_data_grace
        gw = self._gateways.get(self._patient_gateway.get(pid, ""))
        if gw is not None and gw.online and gw.since is not None:
            deadline = max(deadline, gw.since + self.config.flush_grace)
        return deadline

    def _arm_no_data(self, pid: str, metric: str, now: datetime) -> None:
        key = AlertKey(pid, NO_DATA_PREFIX + metric)
        if key in self._alerts or key in self._no_data_suppressed:
            self._cancel(_NO_DATA, key)
            return
        self._arm(_NO_DATA, key, max(self._no_data_deadline(pid, metric), now))

    def _no_data_due(self, key: AlertKey, now: datetime) -> None:
        pid, metric = key.patient_id, key.rule.removeprefix(NO_DATA_PREFIX)
        profile = self._profiles.get(pid)
        if profile is None or metric not in profile.expected_intervals or key in self._alerts:
            return
        deadline = self._no_data_deadline(pid, metric)
        if deadline > now:
            self._arm(_NO_DATA, key, deadline)
            return
        gateway_id = self._patient_gateway.get(pid)
        gw = self._gateways.get(gateway_id) if gateway_id else None
        if gw is not None and gw.online is False:
            return  # the gateway is the cause: "gateway_offline"; re-armed when it comes back
        latest = self._latest.get((pid, metric))
        details: dict[str, object] = {
            "cause": "not_measured",
            "metric": metric,
            "last_measured_at": _iso(latest[0]) if latest else None,
            "expected_interval_s": profile.expected_intervals[metric].total_seconds(),
            "gateway_id": gateway_id,
            "gateway_online": None if gw is None else gw.online,
        }
        self._open(key, self.config.no_data_severity, now, details)

    def _gateway_offline_due(self, gateway_id: str, now: datetime) -> None:
        gw = self._gateways.get(gateway_id)
        if gw is None or gw.online is not False:
            return
        for pid in sorted(gw.patients):
            key = AlertKey(pid, GATEWAY_OFFLINE_RULE)
            if key not in self._alerts:
                details: dict[str, object] = {
                    "cause": "gateway_offline",
                    "gateway_id": gateway_id,
                    "offline_since": _iso(gw.since) if gw.since else None,
                }
                self._open(key, self.config.gateway_offline_severity, now, details)

    # ---- alert lifecycle ----------------------------------------------------------------------------------------

    def _open(self, key: AlertKey, severity: Severity, now: datetime, details: Mapping[str, object]) -> None:
        profile = self._profiles.get(key.patient_id)
        if profile is not None and not profile.monitoring:
            return  # no remote-monitoring consent in force: nothing is raised (law 09-08)
        self._alerts[key] = _Alert(severity, now, details=dict(details))
        self._events.append(AlertEvent(EventKind.RAISED, key, severity, now, dict(details)))
        self._arm_escalation(key)

    def _update(self, key: AlertKey, severity: Severity, now: datetime, details: Mapping[str, object]) -> None:
        alert = self._alerts[key]
        if severity is alert.severity:
            return
        previous, alert.severity, alert.details = alert.severity, severity, dict(details)
        self._events.append(AlertEvent(EventKind.UPDATED, key, severity, now, dict(details), previous))
        if severity.rank > previous.rank:
            alert.escalated = False  # a worse alert escalates again if it is not acknowledged
            alert.acknowledged = False
        self._arm_escalation(key)

    def _close(self, key: AlertKey, now: datetime, details: Mapping[str, object]) -> None:
        alert = self._alerts.pop(key)
        self._cancel(_ESCALATE, key)
        self._events.append(AlertEvent(EventKind.CLEARED, key, alert.severity, now, dict(details)))

    def _arm_escalation(self, key: AlertKey) -> None:
        alert = self._alerts[key]
        after = self.config.escalate_after.get(alert.severity)
        if alert.acknowledged or alert.escalated or after is None:
            self._cancel(_ESCALATE, key)
        else:
            self._arm(_ESCALATE, key, alert.raised_at + after)

    def _escalate(self, key: AlertKey, now: datetime) -> None:
        alert = self._alerts.get(key)
        if alert is None or alert.acknowledged or alert.escalated:
            return
        alert.escalated = True
        self._events.append(
            AlertEvent(EventKind.ESCALATED, key, alert.severity, now, {"raised_at": _iso(alert.raised_at)})
        )

    # ---- timers -------------------------------------------------------------------------------------------------

    def _arm(self, kind: str, key: object, when: datetime) -> None:
        self._timers.arm(kind, key, when)

    def _cancel(self, kind: str, key: object) -> None:
        self._timers.cancel(kind, key)
