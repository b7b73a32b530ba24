"""Simulated GATT peripheral core: service table, connection state, subscriptions, device clock, fault hooks.

Contract (aioquic-style pure core): a `SimPeripheral` never reads a clock and never awaits. Every method that depends on
time takes `now` (aware UTC, simulated). The driver calls `handle_timer(now)` at or after `get_timer()`, and drains
`next_event()` after every call: `Notification` (bytes for a characteristic the client subscribed to; `indication`
tells the property used) or `LinkLost` (the peripheral dropped the link: fault injection, out of range, own decision).

Reads and writes follow the GATT rules: unknown characteristic -> ATT 0x0A, no read property -> 0x02, no write property
-> 0x03 (raised as `devices.errors.AttError` with `.code`). Every peripheral also serves Device Information (0x180A),
Battery (0x180F) and Current Time (0x1805: Current Time 0x2A2B and Date Time 0x2A08, readable and writable) so a gateway
can measure and correct the device clock, which runs `clock_offset` away from UTC (zone and drift together).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, Final, Literal

from devices.datetime_field import DateTime, decode_date_time, encode_date_time
from devices.errors import AttError, DecodeError
from devices.gatt import uuids
from devices.sim.physiology import PatientProfile, Vitals, rng, vitals_at
from devices.sim.scenarios import Scenario

Property = Literal["read", "write", "write-without-response", "notify", "indicate"]

ATT_READ_NOT_PERMITTED: Final = 0x02
ATT_WRITE_NOT_PERMITTED: Final = 0x03
ATT_ATTRIBUTE_NOT_FOUND: Final = 0x0A
ATT_INVALID_ATTRIBUTE_VALUE_LENGTH: Final = 0x0D
ATT_CCCD_IMPROPERLY_CONFIGURED: Final = 0xFD
ATT_PROCEDURE_ALREADY_IN_PROGRESS: Final = 0xFE


def uuid(uuid16: int) -> str:
    """Full lowercase 128-bit string of a SIG 16-bit UUID (the form bleak uses)."""
    return uuids.uuid16_to_str(uuid16)


@dataclass(frozen=True, slots=True)
class CharacteristicSpec:
    """A characteristic of the simulated GATT table."""

    uuid: str
    properties: tuple[Property, ...]


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A primary service and its characteristics, in handle order."""

    uuid: str
    characteristics: tuple[CharacteristicSpec, ...]


@dataclass(frozen=True, slots=True)
class Notification:
    """Bytes the peripheral sends for a subscribed characteristic."""

    char_uuid: str
    data: bytes
    indication: bool


@dataclass(frozen=True, slots=True)
class LinkLost:
    """The peripheral dropped the connection (an event, not an exception)."""

    reason: str


Event = Notification | LinkLost


@dataclass(frozen=True, slots=True)
class Patient:
    """Whose body a peripheral measures: profile + scenario."""

    profile: PatientProfile
    scenario: Scenario

    def vitals(self, now: datetime) -> Vitals:
        """`vitals_at` for this patient at `now`."""
        return vitals_at(self.profile, self.scenario, now)


@dataclass(slots=True)
class Faults:
    """Fault injection knobs of one peripheral (mutable; the backend and the peripheral consume them)."""

    connect_failures: int = 0
    """The next N connection attempts fail with a BlueZ-like transient error (`connect_error`)."""
    connect_error: str = "le-connection-abort-by-local"
    corrupt_next: int = 0
    """The next N notifications/indications are truncated (malformed bytes reach the client)."""
    corrupt_keep: int = 1
    """How many bytes of a corrupted notification survive."""
    disconnect_after_racp_records: int | None = None
    """During the next RACP transfer, drop the link after this many records (consumed when it fires)."""


def _char(uuid16: int, *props: Property) -> CharacteristicSpec:
    return CharacteristicSpec(uuid(uuid16), props)


class SimPeripheral:
    """Base class of the simulated devices; subclasses add their services and measurement logic."""

    kind: ClassVar[str] = "generic"
    primary_service: ClassVar[int] = uuids.DEVICE_INFORMATION_SERVICE

    def __init__(
        self,
        *,
        address: str,
        name: str,
        patient: Patient,
        manufacturer: str = "tbib simulated devices",
        model: str = "SIM-1",
        serial: str = "",
        firmware: str = "1.0.0",
        clock_offset: timedelta = timedelta(0),
        battery_level: int = 90,
        tx_power: int = 0,
        rssi: int = -60,
    ) -> None:
        self.address = address.upper()
        self.name = name
        self.patient = patient
        self.manufacturer = manufacturer
        self.model = model
        self.serial = serial or f"SN{self.address.replace(':', '')}"
        self.firmware = firmware
        self.clock_offset = clock_offset
        """Device local time minus UTC (time zone and clock drift together); the gateway measures it via 0x2A2B."""
        self.battery_level = battery_level
        self.tx_power = tx_power
        self.base_rssi = rssi
        self.advertising = True
        """False = out of range (not advertising; a connected link is lost)."""
        self.connected = False
        self.faults = Faults()
        self._subscribed: set[str] = set()
        self._events: deque[Event] = deque()
        self._services = self._build_services()
        self._chars = {c.uuid: c for s in self._services for c in s.characteristics}

    # --- GATT table -------------------------------------------------------------------------------------------------
    def device_services(self) -> tuple[ServiceSpec, ...]:
        """The device-specific services (subclasses)."""
        return ()

    def _build_services(self) -> tuple[ServiceSpec, ...]:
        common = (
            ServiceSpec(
                uuid(uuids.DEVICE_INFORMATION_SERVICE),
                (
                    _char(uuids.MANUFACTURER_NAME_STRING, "read"),
                    _char(uuids.MODEL_NUMBER_STRING, "read"),
                    _char(uuids.SERIAL_NUMBER_STRING, "read"),
                    _char(uuids.FIRMWARE_REVISION_STRING, "read"),
                ),
            ),
            ServiceSpec(uuid(uuids.BATTERY_SERVICE), (_char(uuids.BATTERY_LEVEL, "read", "notify"),)),
            ServiceSpec(
                uuid(uuids.CURRENT_TIME_SERVICE),
                (_char(uuids.CURRENT_TIME, "read", "write", "notify"), _char(uuids.DATE_TIME, "read", "write")),
            ),
        )
        return (*self.device_services(), *common)

    @property
    def services(self) -> tuple[ServiceSpec, ...]:
        """The whole GATT table (device services first)."""
        return self._services

    @property
    def advertised_service_uuids(self) -> list[str]:
        """Service UUIDs carried in the advertisement (the primary health service)."""
        return [uuid(self.primary_service)]

    def characteristic(self, char_uuid: str) -> CharacteristicSpec:
        """The spec of `char_uuid`; AttError 0x0A if the device has no such characteristic."""
        try:
            return self._chars[char_uuid.lower()]
        except KeyError:
            raise AttError(ATT_ATTRIBUTE_NOT_FOUND, f"{self.name} has no characteristic {char_uuid}") from None

    def rssi(self, now: datetime) -> int:
        """Received signal strength (dBm), a few dB of deterministic fading around the base value."""
        k = int(now.timestamp())
        return self.base_rssi + rng(self.patient.profile.seed, self.address, "rssi", k).randint(-4, 4)

    # --- device clock -----------------------------------------------------------------------------------------------
    def device_time(self, now: datetime) -> datetime:
        """The device's wall clock (naive local time) at `now`."""
        return (now + self.clock_offset).replace(tzinfo=None)

    def date_time(self, now: datetime) -> DateTime:
        """The Date Time field the device stamps at `now`."""
        return DateTime.from_datetime(self.device_time(now))

    def set_device_time(self, device_time: datetime, now: datetime) -> None:
        """A client set the device clock (naive local time) at `now`."""
        self.clock_offset = device_time - now.replace(tzinfo=None)

    def _current_time_bytes(self, now: datetime) -> bytes:
        # CTS 0x2A2B = Exact Time 256: Date Time, Day of Week (1 = Monday), Fractions256, Adjust Reason (CTS §3.1).
        local = self.device_time(now)
        fractions = local.microsecond * 256 // 1_000_000
        return encode_date_time(DateTime.from_datetime(local)) + bytes((local.isoweekday(), fractions, 0))

    # --- connection and subscriptions -------------------------------------------------------------------------------
    def connect(self, now: datetime) -> None:
        """A central connected (the driver checked `faults.connect_failures` and range before)."""
        self.connected = True
        self._subscribed.clear()
        self.on_connect(now)

    def disconnect(self, now: datetime) -> None:
        """The link is gone (either side)."""
        self.connected = False
        self._subscribed.clear()
        self.on_disconnect(now)

    def drop_link(self, reason: str, now: datetime) -> None:
        """The peripheral side drops the connection: queue `LinkLost` (fault injection, out of range)."""
        if self.connected:
            self.disconnect(now)
            self._events.append(LinkLost(reason))

    def subscribe(self, char_uuid: str, now: datetime) -> None:
        """The client wrote the CCCD to enable notifications or indications."""
        spec = self.characteristic(char_uuid)
        if "notify" not in spec.properties and "indicate" not in spec.properties:
            raise AttError(ATT_WRITE_NOT_PERMITTED, f"{spec.uuid} supports neither notify nor indicate")
        self._subscribed.add(spec.uuid)
        self.on_subscribe(spec.uuid, now)

    def unsubscribe(self, char_uuid: str, now: datetime) -> None:
        """The client disabled notifications or indications."""
        self._subscribed.discard(self.characteristic(char_uuid).uuid)

    def is_subscribed(self, char_uuid: str) -> bool:
        """True when the client enabled notifications/indications on `char_uuid`."""
        return char_uuid in self._subscribed

    # --- GATT operations --------------------------------------------------------------------------------------------
    def read(self, char_uuid: str, now: datetime) -> bytes:
        """Value of a readable characteristic at `now`."""
        spec = self.characteristic(char_uuid)
        if "read" not in spec.properties:
            raise AttError(ATT_READ_NOT_PERMITTED, f"{spec.uuid} is not readable")
        common: dict[str, bytes] = {
            uuid(uuids.MANUFACTURER_NAME_STRING): self.manufacturer.encode(),
            uuid(uuids.MODEL_NUMBER_STRING): self.model.encode(),
            uuid(uuids.SERIAL_NUMBER_STRING): self.serial.encode(),
            uuid(uuids.FIRMWARE_REVISION_STRING): self.firmware.encode(),
            uuid(uuids.BATTERY_LEVEL): bytes((self.battery_level,)),
        }
        if spec.uuid in common:
            return common[spec.uuid]
        if spec.uuid == uuid(uuids.CURRENT_TIME):
            return self._current_time_bytes(now)
        if spec.uuid == uuid(uuids.DATE_TIME):
            return encode_date_time(self.date_time(now))
        return self.read_device(spec.uuid, now)

    def write(self, char_uuid: str, data: bytes, now: datetime) -> None:
        """A write request (with response) on `char_uuid`."""
        spec = self.characteristic(char_uuid)
        if "write" not in spec.properties and "write-without-response" not in spec.properties:
            raise AttError(ATT_WRITE_NOT_PERMITTED, f"{spec.uuid} is not writable")
        if spec.uuid in (uuid(uuids.CURRENT_TIME), uuid(uuids.DATE_TIME)):
            try:
                value = decode_date_time(data[:7]).to_datetime()
            except DecodeError:
                value = None
            if value is None:
                raise AttError(ATT_INVALID_ATTRIBUTE_VALUE_LENGTH, f"bad date time {data.hex()}")
            self.set_device_time(value, now)
            return
        self.write_device(spec.uuid, data, now)

    # --- events and timers ------------------------------------------------------------------------------------------
    def next_event(self) -> Event | None:
        """Pop the next queued event."""
        return self._events.popleft() if self._events else None

    def emit(self, char_uuid: str, data: bytes) -> bool:
        """Queue a notification/indication if the client subscribed; applies the corruption fault. True if queued."""
        if not self.connected or char_uuid not in self._subscribed:
            return False
        if self.faults.corrupt_next > 0:
            self.faults.corrupt_next -= 1
            data = data[: self.faults.corrupt_keep]
        indication = "indicate" in self._chars[char_uuid].properties
        self._events.append(Notification(char_uuid, data, indication))
        return True

    def get_timer(self) -> datetime | None:
        """When `handle_timer` must next be called (None: nothing scheduled)."""
        return None

    def handle_timer(self, now: datetime) -> None:
        """Advance the device to `now` (idempotent; catches up on missed periods)."""

    # --- subclass hooks ---------------------------------------------------------------------------------------------
    def on_connect(self, now: datetime) -> None:
        """Hook: a central connected."""

    def on_disconnect(self, now: datetime) -> None:
        """Hook: the link is gone."""

    def on_subscribe(self, char_uuid: str, now: datetime) -> None:
        """Hook: the client subscribed to `char_uuid`."""

    def read_device(self, char_uuid: str, now: datetime) -> bytes:
        """Hook: value of a device-specific readable characteristic."""
        raise AttError(ATT_READ_NOT_PERMITTED, f"{char_uuid} has no readable value")

    def write_device(self, char_uuid: str, data: bytes, now: datetime) -> None:
        """Hook: a write on a device-specific characteristic."""
        raise AttError(ATT_WRITE_NOT_PERMITTED, f"{char_uuid} is not writable")


def u16(value: int) -> bytes:
    """Little-endian uint16 (for feature bitfields of the device's own Feature characteristics)."""
    return struct.pack("<H", value)


@dataclass(slots=True)
class Schedule:
    """Periodic instants `first + k x period`; `due(now)` yields those not handled yet (at most `max_catch_up`)."""

    first: datetime
    period: timedelta
    max_catch_up: int = 1000
    next_at: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.next_at = self.first

    def due(self, now: datetime) -> list[datetime]:
        """Instants in (previous, now] to handle, oldest first; skips ahead if more than `max_catch_up` were missed."""
        if now < self.next_at:
            return []
        missed = int((now - self.next_at) / self.period) + 1
        if missed > self.max_catch_up:
            self.next_at += self.period * (missed - self.max_catch_up)
            missed = self.max_catch_up
        out = [self.next_at + self.period * i for i in range(missed)]
        self.next_at = out[-1] + self.period
        return out

    def skip_to(self, now: datetime) -> None:
        """Forget instants up to `now` (a continuous device that was off)."""
        if now >= self.next_at:
            self.next_at += self.period * (int((now - self.next_at) / self.period) + 1)
