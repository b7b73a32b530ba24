"""Errors of the ``devices`` package: one root, :class:`DevicesError`.

``DecodeError`` means the peer (a device) sent bytes that do not follow the specification; ``EncodeError`` means we
were asked to encode a value the format cannot carry (our misuse). Both are also ``ValueError``.
"""

from __future__ import annotations


class DevicesError(Exception):
    """Root of every error raised by ``devices``."""


class DecodeError(DevicesError, ValueError):
    """Malformed bytes from a device: names the field, and the byte counts when the value was too short.

    ``str(err)`` reads ``"heart_rate: expected 2 bytes at offset 1, got 1"`` or ``"<field>: <reason>"``.
    """

    field: str
    expected: int | None
    actual: int | None
    offset: int | None
    reason: str | None

    def __init__(
        self,
        field: str,
        *,
        expected: int | None = None,
        actual: int | None = None,
        offset: int | None = None,
        reason: str | None = None,
    ) -> None:
        self.field = field
        self.expected = expected
        self.actual = actual
        self.offset = offset
        self.reason = reason
        if reason is not None:
            message = f"{field}: {reason}"
        else:
            where = f" at offset {offset}" if offset is not None else ""
            message = f"{field}: expected {expected} bytes{where}, got {actual}"
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_decode_error, (self.field, self.expected, self.actual, self.offset, self.reason))


def _rebuild_decode_error(
    field: str, expected: int | None, actual: int | None, offset: int | None, reason: str | None
) -> DecodeError:
    return DecodeError(field, expected=expected, actual=actual, offset=offset, reason=reason)


class EncodeError(DevicesError, ValueError):
    """A value cannot be represented in the wire format (out of range, wrong combination of fields)."""


class UnknownCharacteristicError(DevicesError, LookupError):
    """No codec is registered for this characteristic."""

    def __init__(self, characteristic: str) -> None:
        self.characteristic = characteristic
        super().__init__(f"unknown characteristic: {characteristic}")


class UnknownMetricError(DevicesError, LookupError):
    """The metric name is not in :data:`devices.codes.METRICS`."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        super().__init__(f"unknown metric: {metric!r}")


class SimulationError(DevicesError):
    """Misuse of the simulators in ``devices.sim`` (unknown scenario, naive datetime, unknown device address)."""


class AttError(SimulationError):
    """A simulated peripheral refused a GATT request with ATT error ``code`` (Core Vol 3 Part F §3.4.1.1)."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(f"ATT error 0x{code:02X}: {message}")
