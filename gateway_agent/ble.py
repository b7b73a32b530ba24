"""BLE connection manager: enrolled health devices -> decoded readings -> a sink (the outbox), on bleak.

Contract
- Only enrolled addresses are used (allowlist); discovery filters on the health service UUIDs of the enrolled kinds.
- One session task per enrolled device: wait for its advertisement, connect with bleak-retry-connector's
  ``establish_connection``, read the device clock (Date Time 0x2A08, else Current Time 0x2A2B) to measure the offset
  (device local time minus gateway UTC) and persist it, ``start_notify`` on the measurement characteristics (notify and
  indicate alike), decode each value with :mod:`devices.gatt`, turn it into readings with
  :func:`devices.readings.to_readings`, and hand them to the sink. Readings are durable when the sink returns.
- Malformed bytes: logged, counted in the device status, the session goes on (an event, not an exception).
- Spot-check devices are disconnected after ``idle_disconnect_s`` without a value; notifications are turned off before
  every requested disconnect. Lost links reconnect with jittered backoff.
- Glucose meters: subscribe to 0x2A18 and RACP 0x2A52, then request "records with sequence number >= last + 1" (all
  records the first time); the last sequence number is persisted with the readings of each record (same transaction),
  so a transfer cut mid-way resumes where it stopped.

The scanner and client backends are injectable (``scanner_kwargs`` / ``client_kwargs``, e.g.
``{"backend": SimBleakScanner, "sim_world": world}``), which is how tests and ``--simulate`` run without a radio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bleak_retry_connector import establish_connection

from devices.datetime_field import decode_date_time
from devices.errors import DecodeError, DevicesError
from devices.gatt import decode_characteristic, uuids
from devices.gatt.racp import OpCode, ResponseCode, decode_racp, encode_racp, report_all_records, report_records_from
from devices.readings import to_readings
from gateway_agent.config import DeviceEntry, DeviceKind
from gateway_agent.payload import reading_object
from gateway_agent.publisher import Backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KindProfile:
    """The GATT side of a device kind."""

    service: int
    measurements: tuple[int, ...]
    spot_check: bool


KIND_PROFILES: Final[Mapping[DeviceKind, KindProfile]] = {
    DeviceKind.HEART_RATE: KindProfile(uuids.HEART_RATE_SERVICE, (uuids.HEART_RATE_MEASUREMENT,), False),
    DeviceKind.BLOOD_PRESSURE: KindProfile(uuids.BLOOD_PRESSURE_SERVICE, (uuids.BLOOD_PRESSURE_MEASUREMENT,), True),
    DeviceKind.THERMOMETER: KindProfile(uuids.HEALTH_THERMOMETER_SERVICE, (uuids.TEMPERATURE_MEASUREMENT,), True),
    DeviceKind.PULSE_OXIMETER: KindProfile(
        uuids.PULSE_OXIMETER_SERVICE, (uuids.PLX_SPOT_CHECK_MEASUREMENT, uuids.PLX_CONTINUOUS_MEASUREMENT), False
    ),
    DeviceKind.WEIGHT_SCALE: KindProfile(uuids.WEIGHT_SCALE_SERVICE, (uuids.WEIGHT_MEASUREMENT,), True),
    DeviceKind.GLUCOSE_METER: KindProfile(uuids.GLUCOSE_SERVICE, (uuids.GLUCOSE_MEASUREMENT,), True),
    DeviceKind.CGM: KindProfile(uuids.CONTINUOUS_GLUCOSE_MONITORING_SERVICE, (uuids.CGM_MEASUREMENT,), False),
}
DEFAULT_SPOT_IDLE_S: Final = 10.0
RACP_TIMEOUT_S: Final = 30.0


class ReadingSink(Protocol):
    """Where readings go (the outbox): durable when the call returns."""

    def append(
        self, readings: Sequence[tuple[str, Mapping[str, Any]]], *, racp_last_seq: tuple[str, int] | None = None
    ) -> list[str]: ...

    def racp_last_seq(self, address: str) -> int | None: ...

    def set_clock_offset(self, address: str, offset_s: float) -> None: ...


@dataclass(slots=True)
class DeviceStatus:
    """What the status file shows about one enrolled device."""

    address: str
    device_id: str
    kind: str
    connected: bool = False
    connects: int = 0
    readings: int = 0
    decode_errors: int = 0
    last_reading: dict[str, Any] | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    clock_offset_s: float | None = None
    racp_last_seq: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON object."""
        return {k: getattr(self, k) for k in self.__slots__ if k != "extra"}


def service_uuids(devices: Sequence[DeviceEntry]) -> list[str]:
    """Full UUIDs of the health services of the enrolled kinds (scan filter)."""
    return sorted({uuids.uuid16_to_str(KIND_PROFILES[d.kind].service) for d in devices})


class BleManager:
    """Run one session per enrolled device; call :meth:`run` as a task and :meth:`stop` to end it."""

    def __init__(
        self,
        devices: Sequence[DeviceEntry],
        sink: ReadingSink,
        *,
        on_appended: Callable[[int], None] | None = None,
        on_event: Callable[..., None] | None = None,
        clock: Callable[[], datetime] | None = None,
        scanner_kwargs: Mapping[str, Any] | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        spot_recheck_s: float = 30.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        connect_attempts: int = 3,
    ) -> None:
        self.devices = {d.address: d for d in devices}
        self.sink = sink
        self.status = {d.address: DeviceStatus(d.address, d.device_id, d.kind.value) for d in devices}
        self._on_appended = on_appended
        self._on_event = on_event
        self._clock = clock or (lambda: datetime.now(UTC))
        self._scanner_kwargs = dict(scanner_kwargs or {})
        self._client_kwargs = dict(client_kwargs or {})
        self.spot_recheck_s = spot_recheck_s
        self._backoff = {a: Backoff(initial=backoff_initial, maximum=backoff_max) for a in self.devices}
        self._connect_attempts = connect_attempts
        self._seen: dict[str, BLEDevice] = {}
        self._advertised = {a: asyncio.Event() for a in self.devices}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.clients: dict[str, BleakClient] = {}
        self.scanner_error: str | None = None
        """Why scanning cannot start (no adapter, BlueZ down), for the status file."""
        self.scanner_retry_s = 30.0

    # -- lifecycle -----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Scan and keep a session per enrolled device until :meth:`stop`."""
        if not self.devices:
            log.warning("no enrolled devices: nothing to do")
            await self._stopping.wait()
            return
        while True:  # no adapter / BlueZ down: say so in the status, keep the publisher replaying, retry
            scanner = BleakScanner(self._detected, service_uuids(list(self.devices.values())), **self._scanner_kwargs)
            try:
                await scanner.start()
            except (BleakError, OSError) as exc:
                self.scanner_error = f"cannot scan (BlueZ running? an adapter?): {type(exc).__name__}: {exc}"
            else:
                self.scanner_error = None
                break
            log.error("%s; retrying in %.0f s", self.scanner_error, self.scanner_retry_s)
            if not await self._wait_or_stop(self._stopping.wait(), self.scanner_retry_s):
                return
        try:
            self._tasks = [asyncio.create_task(self._device_loop(d), name=f"ble-{a}") for a, d in self.devices.items()]
            await self._stopping.wait()
        finally:
            # Cancel until done: a backend may swallow one cancellation (a `suppress(CancelledError)` around an
            # inner await), so the loops also check `_stopping`.
            pending = set(self._tasks)
            while pending:
                for t in pending:
                    t.cancel()
                _, pending = await asyncio.wait(pending, timeout=1.0)
            await scanner.stop()

    def stop(self) -> None:
        """Ask :meth:`run` to end (sessions turn notifications off and disconnect)."""
        self._stopping.set()

    def _detected(self, device: BLEDevice, _adv: AdvertisementData) -> None:
        address = device.address.upper()
        if address in self.devices:  # allowlist: everything else is ignored
            self._seen[address] = device
            self._advertised[address].set()

    # -- one device ----------------------------------------------------------------------------------------------
    async def _device_loop(self, entry: DeviceEntry) -> None:
        address = entry.address
        profile = KIND_PROFILES[entry.kind]
        while not self._stopping.is_set():
            self._advertised[address].clear()
            if not await self._wait_or_stop(self._advertised[address].wait(), None):
                return
            try:
                await self._session(entry, profile, self._seen[address])
            except (BleakError, TimeoutError, OSError, DevicesError) as exc:
                self._error(address, f"{type(exc).__name__}: {exc}")
                delay = self._backoff[address].next_delay()
                log.warning("%s: session failed (%s); retrying in %.1f s", address, exc, delay)
                await self._wait_or_stop(self._stopping.wait(), delay)
                continue
            self._backoff[address].reset()
            if profile.spot_check:
                await self._wait_or_stop(self._stopping.wait(), self.spot_recheck_s)

    async def _wait_or_stop(self, aw: Coroutine[Any, Any, Any], limit_s: float | None) -> bool:
        """Await ``aw`` for at most ``limit_s`` seconds unless the manager stops; False when stopping."""
        waiter = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stop}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stop.cancel()
        return not self._stopping.is_set()

    async def _session(self, entry: DeviceEntry, profile: KindProfile, device: BLEDevice) -> None:
        address = entry.address
        lost = asyncio.Event()
        client = await establish_connection(
            BleakClient,
            device,
            entry.device_id,
            disconnected_callback=lambda _c: lost.set(),
            max_attempts=self._connect_attempts,
            **self._client_kwargs,
        )
        st = self.status[address]
        st.connected = True
        st.connects += 1
        self.clients[address] = client
        self._event("device_connected", address=address, device_id=entry.device_id)
        subscribed: list[str] = []
        try:
            offset = await self._read_clock(client, address)
            activity = asyncio.Event()
            session = _Session(self, entry, offset, activity)
            for char16 in profile.measurements:
                char = uuids.uuid16_to_str(char16)
                if client.services.get_characteristic(char) is None:
                    continue
                await client.start_notify(char, session.callback(char16))
                subscribed.append(char)
            if not subscribed:
                raise BleakError(f"{address} offers none of the {entry.kind.value} measurement characteristics")
            if entry.kind is DeviceKind.GLUCOSE_METER:
                subscribed.append(await session.racp_transfer(client, lost))
                return
            idle = entry.idle_disconnect_s or (DEFAULT_SPOT_IDLE_S if profile.spot_check else None)
            await _wait_until_idle_or_lost(activity, lost, self._stopping, idle)
        finally:
            st.connected = False
            self.clients.pop(address, None)
            if client.is_connected:
                for char in subscribed:
                    with contextlib.suppress(BleakError, KeyError):
                        await client.stop_notify(char)
                with contextlib.suppress(BleakError):
                    await client.disconnect()
            self._event("device_disconnected", address=address, device_id=entry.device_id)

    async def _read_clock(self, client: BleakClient, address: str) -> timedelta | None:
        """Clock offset as :func:`devices.readings.to_readings` wants it: gateway UTC minus the device clock read as
        UTC (zone and drift together), from Current Time (0x2A2B, with its 1/256 s fractions) or Date Time (0x2A08,
        whole seconds); None when neither works."""
        for char16 in (uuids.CURRENT_TIME, uuids.DATE_TIME):
            char = uuids.uuid16_to_str(char16)
            if client.services.get_characteristic(char) is None:
                continue
            data = await client.read_gatt_char(char)
            now = self._clock()
            try:
                device_time = decode_date_time(bytes(data[:7])).to_datetime()
            except DecodeError as exc:
                self._error(address, f"bad device time {bytes(data).hex()}: {exc}")
                return None
            if device_time is None:
                return None
            if char16 == uuids.CURRENT_TIME and len(data) >= 9:  # CTS Exact Time 256: byte 8 = Fractions256
                device_time += timedelta(seconds=data[8] / 256)
            offset = now.astimezone(UTC).replace(tzinfo=None) - device_time
            st = self.status[address]
            previous = st.clock_offset_s
            st.clock_offset_s = round(offset.total_seconds(), 3)
            self.sink.set_clock_offset(address, st.clock_offset_s)
            if previous is None or abs(previous - st.clock_offset_s) > 2.0:
                self._event("clock_offset", address=address, offset_s=st.clock_offset_s)
            return offset
        return None

    # -- helpers used by the session ------------------------------------------------------------------------------
    def _error(self, address: str, message: str) -> None:
        st = self.status[address]
        st.last_error = message
        st.last_error_at = self._clock().isoformat()

    def _event(self, kind: str, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event(kind, **fields)


class _Session:
    """Per-connection state: decode, convert, append; RACP bookkeeping for glucose meters."""

    def __init__(self, mgr: BleManager, entry: DeviceEntry, offset: timedelta | None, activity: asyncio.Event) -> None:
        self.mgr = mgr
        self.entry = entry
        self.offset = offset
        self.activity = activity
        self.racp_done = asyncio.Event()
        self.racp_code: int | None = None

    def callback(self, char16: int) -> Callable[[Any, bytearray], None]:
        def on_value(_char: Any, data: bytearray) -> None:
            self.activity.set()
            self.handle(char16, bytes(data))

        return on_value

    def handle(self, char16: int, data: bytes) -> None:
        mgr, address = self.mgr, self.entry.address
        st = mgr.status[address]
        if char16 == uuids.RECORD_ACCESS_CONTROL_POINT:
            self._racp(data)
            return
        try:
            measurement = decode_characteristic(char16, data)
        except DevicesError as exc:  # DecodeError, or a characteristic without a codec
            st.decode_errors += 1
            mgr._error(address, f"malformed 0x{char16:04X} value {data.hex()}: {exc}")
            log.warning("%s: malformed 0x%04X value %s: %s", address, char16, data.hex(), exc)
            return
        received_at = mgr._clock()
        offset = self.offset if self.offset is not None else self._stored_offset()
        try:
            readings = to_readings(measurement, received_at=received_at, clock_offset=offset or timedelta(0))
        except (DevicesError, TypeError, ValueError) as exc:
            mgr._error(address, f"0x{char16:04X} value {data.hex()} gives no reading: {exc}")
            log.warning("%s: 0x%04X value gives no reading: %s", address, char16, exc)
            return
        objects = [
            (
                address,
                reading_object(
                    r, address=address, model=self.entry.model, serial=self.entry.serial, received_at=received_at
                ),
            )
            for r in readings
        ]
        if offset is None:  # device time read as UTC: say so rather than pretend
            readings = [replace(r, flags={**r.flags, "clock_offset_unknown": True}) for r in readings]
        seq = getattr(measurement, "sequence_number", None) if char16 == uuids.GLUCOSE_MEASUREMENT else None
        racp = (address, int(seq)) if seq is not None else None
        if objects or racp:
            mgr.sink.append(objects, racp_last_seq=racp)
        if racp is not None:
            st.racp_last_seq = racp[1]
        if objects:
            st.readings += len(objects)
            last = objects[-1][1]
            st.last_reading = {k: last[k] for k in ("metric", "value", "unit", "measured_at")}
            if mgr._on_appended is not None:
                mgr._on_appended(len(objects))

    def _stored_offset(self) -> timedelta | None:
        """The last offset measured in an earlier session (persisted in the outbox), if any."""
        get = getattr(self.mgr.sink, "clock_offset", None)
        value = get(self.entry.address) if get is not None else None
        return None if value is None else timedelta(seconds=float(value))

    def _racp(self, data: bytes) -> None:
        try:
            msg = decode_racp(data)
        except DecodeError as exc:
            self.mgr.status[self.entry.address].decode_errors += 1
            self.mgr._error(self.entry.address, f"malformed RACP response {data.hex()}: {exc}")
            return
        if msg.op_code == OpCode.RESPONSE_CODE:
            log.debug("%s: RACP response %s", self.entry.address, data.hex())
            self.racp_code = msg.response_code
            self.racp_done.set()

    async def racp_transfer(self, client: BleakClient, lost: asyncio.Event) -> str:
        """Subscribe RACP, request the records after the last one stored, wait for the response. Returns RACP uuid."""
        address = self.entry.address
        racp = uuids.uuid16_to_str(uuids.RECORD_ACCESS_CONTROL_POINT)
        await client.start_notify(racp, self.callback(uuids.RECORD_ACCESS_CONTROL_POINT))
        last = self.mgr.sink.racp_last_seq(address)
        self.mgr.status[address].racp_last_seq = last
        request = report_all_records() if last is None else report_records_from((last + 1) & 0xFFFF)
        log.debug("%s: RACP request %s (last stored sequence %s)", address, encode_racp(request).hex(), last)
        await client.write_gatt_char(racp, encode_racp(request), response=True)
        done = asyncio.ensure_future(self.racp_done.wait())
        gone = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({done, gone}, timeout=RACP_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            gone.cancel()
        if not self.racp_done.is_set():
            raise BleakError(
                f"{address}: RACP transfer interrupted after sequence {self.mgr.sink.racp_last_seq(address)}"
            )
        if self.racp_code not in (ResponseCode.SUCCESS, ResponseCode.NO_RECORDS_FOUND):
            raise BleakError(f"{address}: RACP refused: response code {self.racp_code}")
        return racp


async def _wait_until_idle_or_lost(
    activity: asyncio.Event, lost: asyncio.Event, stopping: asyncio.Event, idle_s: float | None
) -> None:
    """Return when the link is lost, the manager stops, or (spot-check) nothing arrived for ``idle_s`` seconds."""
    ends = [asyncio.ensure_future(lost.wait()), asyncio.ensure_future(stopping.wait())]
    try:
        while True:
            activity.clear()
            act = asyncio.ensure_future(activity.wait())
            done, _ = await asyncio.wait({act, *ends}, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
            act.cancel()
            if not done or any(e in done for e in ends):
                return
    finally:
        for e in ends:
            e.cancel()


async def scan(
    devices: Sequence[DeviceEntry] | None, *, seconds: float = 5.0, scanner_kwargs: Mapping[str, Any] | None = None
) -> list[tuple[BLEDevice, AdvertisementData]]:
    """Devices advertising a health service (all kinds when ``devices`` is None), strongest first."""
    filters = (
        service_uuids(devices) if devices else sorted(uuids.uuid16_to_str(p.service) for p in KIND_PROFILES.values())
    )
    found = await BleakScanner.discover(seconds, return_adv=True, service_uuids=filters, **(scanner_kwargs or {}))
    return sorted(found.values(), key=lambda da: -(da[1].rssi or -200))
