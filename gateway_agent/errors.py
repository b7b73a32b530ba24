"""Errors of the home gateway: one root, :class:`GatewayError`.

"We misused it" (bad configuration, closed outbox) is kept apart from "the peer refused or sent garbage" (the broker
refused the credentials, a device sent undecodable bytes). Expected conditions (a device disconnected, the link dropped)
are events, not exceptions.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error raised by :mod:`gateway_agent`."""


class ConfigError(GatewayError, ValueError):
    """The configuration is invalid; ``field`` names the setting (dotted path), ``source`` the file."""

    def __init__(self, message: str, *, field: str | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.source = source


class OutboxError(GatewayError):
    """The outbox database cannot be used (closed, unreadable, wrong schema)."""


class BrokerError(GatewayError):
    """The MQTT broker refused us; ``reason_code`` is the MQTT v5 reason code value and ``reason`` its name."""

    def __init__(self, message: str, *, reason_code: int, reason: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.reason = reason


class BrokerAuthError(BrokerError):
    """The broker refused the credentials (CONNACK 0x86 bad user name or password, 0x87 not authorized)."""


class DeviceError(GatewayError):
    """A BLE device could not be used; ``address`` names it."""

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class DeviceNotEnrolledError(DeviceError):
    """The address is not in the gateway's allowlist of enrolled devices."""


class RacpError(DeviceError):
    """A glucose meter answered an RACP request with a failure ``response_code`` (RACP response 0x06)."""

    def __init__(self, message: str, *, address: str, response_code: int) -> None:
        super().__init__(message, address=address)
        self.response_code = response_code


class ConsultError(GatewayError):
    """The consult agent could not join or keep a teleconsultation; ``code`` is the signaling error code, if any."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class CommandRejectedError(GatewayError, ValueError):
    """A message on our ``commands`` topic was refused (garbage or a forgery); ``reason`` is the code counted and
    reported (``malformed``, ``bad-signature``, ``expired``, ``replayed``, ...: :mod:`gateway_agent.commands`)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
