"""Errors of the alerts package; all derive from :class:`AlertsError` (itself a :class:`TeleconsultError`)."""

from __future__ import annotations

from teleconsult.errors import TeleconsultError


class AlertsError(TeleconsultError):
    """The alert engine, its store or its push channels failed or were misused."""


class InvalidObservationError(AlertsError, ValueError):
    """An observation given to NEWS2 or the engine is not a plausible value; ``field`` names it."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class AlertConfigError(AlertsError, ValueError):
    """A rule or engine configuration is inconsistent (we misused it); ``rule`` names the rule when there is one."""

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule


class AlertNotFoundError(AlertsError):
    """No alert with this id (or no open alert for this key)."""

    def __init__(self, alert_id: object) -> None:
        super().__init__(f"alert {alert_id} not found")
        self.alert_id = alert_id


class AlertStateError(AlertsError):
    """The lifecycle transition is not allowed (e.g. acknowledging a resolved alert)."""

    def __init__(self, message: str, *, alert_id: object, state: str) -> None:
        super().__init__(message)
        self.alert_id = alert_id
        self.state = state
