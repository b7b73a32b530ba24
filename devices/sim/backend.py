"""bleak backend over a `SimWorld`: `SimBleakScanner` and `SimBleakClient`.

World lookup, first match wins: the `sim_world=` keyword (bleak forwards extra keywords of `BleakScanner(...)` and
`BleakClient(...)` to the backend), the world of the `BLEDevice` a scanner returned (client), the world bound with
`SimBleakScanner.for_world(world)` / `SimBleakClient.for_world(world)` (typed, for `BleakScanner.discover`), then the
current world of `use_world(world)`.

Usage (gateway code stays plain bleak)::

    world = SimWorld.create(patients=2, scenario="hypoxia", speed=60)
    with use_world(world):                          # or pass sim_world=world to each bleak object
        devices = await BleakScanner.discover(2.0, service_uuids=[HRS], backend=SimBleakScanner)
        async with BleakClient(devices[0], backend=SimBleakClient) as client:
            await client.start_notify(HRM, on_data)

Behaviour copied from BlueZ where bleak leaves it to the backend: the disconnected callback fires on every
disconnection (unsolicited or requested); connection failures are `BleakDBusError("org.bluez.Error.Failed", [reason])`
(bleak-retry-connector classifies them as transient); a device out of range makes `connect` raise
`BleakDeviceNotFoundError` when given an address, `TimeoutError` when given a `BLEDevice`; GATT refusals raise
`BleakGATTProtocolError` with the ATT code. `BLEDevice.details` is a `SimDeviceDetails` (not a BlueZ dict), so
bleak-retry-connector skips its D-Bus calls.

Each connected client runs one driver task: it sleeps until the peripheral's next timer (simulated time converted
with the world's speed), calls `handle_timer(now)`, and delivers the queued notifications to the `start_notify`
callbacks in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDBusError, BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError

from devices.errors import AttError
from devices.gatt import uuids
from devices.sim.base import LinkLost, Notification, SimPeripheral, uuid
from devices.sim.world import SimWorld, current_world

logger = logging.getLogger(__name__)


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel a child task and wait for it, without swallowing a cancellation aimed at the caller itself."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


CCCD_UUID = uuid(uuids.CLIENT_CHARACTERISTIC_CONFIGURATION)


@dataclass(frozen=True, slots=True)
class SimDeviceDetails:
    """`BLEDevice.details` of a simulated device."""

    world: SimWorld
    address: str


def _world(kwargs: dict[str, Any], bound: SimWorld | None) -> SimWorld:
    world = kwargs.get("sim_world")
    if world is None:
        return bound if bound is not None else current_world()
    if not isinstance(world, SimWorld):
        raise TypeError(f"sim_world must be a SimWorld, not {type(world).__name__}")
    return world


class SimBleakScanner(BaseBleakScanner):
    """Scanner that hears the advertisements of the world's peripherals that are in range and not connected."""

    bound_world: ClassVar[SimWorld | None] = None
    """Set on the subclasses made by `for_world`."""

    @classmethod
    def for_world(cls, world: SimWorld) -> type[SimBleakScanner]:
        """A scanner backend bound to `world` (typed use with `BleakScanner.discover(backend=...)`)."""
        return type(f"{cls.__name__}ForWorld", (cls,), {"bound_world": world})

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._world = _world(kwargs, self.bound_world)
        self._scanning_mode = scanning_mode
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start hearing advertisements (seen devices are cleared, as bleak requires)."""
        if self._task is not None:
            raise BleakError("scanner already started")
        self.seen_devices = {}
        self._task = asyncio.create_task(self._run(), name="sim-bleak-scanner")

    async def stop(self) -> None:
        """Stop scanning."""
        task, self._task = self._task, None
        if task is not None:
            await _cancel_and_wait(task)

    def advertisement(self, peripheral: SimPeripheral) -> AdvertisementData:
        """What the peripheral advertises now."""
        now = self._world.clock.now()
        return AdvertisementData(
            local_name=peripheral.name,
            manufacturer_data={},
            service_data={},
            service_uuids=peripheral.advertised_service_uuids,
            tx_power=peripheral.tx_power,
            rssi=peripheral.rssi(now),
            platform_data=(peripheral.address,),
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0)
            for peripheral in list(self._world.peripherals.values()):
                if not peripheral.advertising or peripheral.connected:
                    continue
                adv = self.advertisement(peripheral)
                if not self.is_allowed_uuid(adv.service_uuids):
                    continue
                details = SimDeviceDetails(self._world, peripheral.address)
                device = self.create_or_update_device(
                    peripheral.address, peripheral.address, peripheral.name, details, adv
                )
                self.call_detection_callbacks(device, adv)
            await asyncio.sleep(self._world.advertising_interval_s)


class SimBleakClient(BaseBleakClient):
    """GATT client connected to a simulated peripheral."""

    bound_world: ClassVar[SimWorld | None] = None
    """Set on the subclasses made by `for_world`."""

    @classmethod
    def for_world(cls, world: SimWorld) -> type[SimBleakClient]:
        """A client backend bound to `world` (when connecting by address without `use_world`)."""
        return type(f"{cls.__name__}ForWorld", (cls,), {"bound_world": world})

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        services: set[str] | None = None,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        details = address_or_ble_device.details if isinstance(address_or_ble_device, BLEDevice) else None
        if isinstance(details, SimDeviceDetails) and kwargs.get("sim_world") is None:
            self._world = details.world
        else:
            self._world = _world(kwargs, self.bound_world)
        self._by_device = isinstance(address_or_ble_device, BLEDevice)
        self._requested_services = services
        self._peripheral: SimPeripheral | None = None
        self._connected = False
        self._callbacks: dict[str, NotifyCallback] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- properties -------------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The peripheral's local name."""
        peripheral = self._world.peripherals.get(self.address.upper())
        if peripheral is None:
            raise BleakError("Not connected")
        return peripheral.name

    @property
    def mtu_size(self) -> int:
        """The world's ATT MTU."""
        return self._world.mtu

    @property
    def is_connected(self) -> bool:
        """True while the simulated link is up."""
        return self._connected

    # --- connection -------------------------------------------------------------------------------------------------
    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Connect, or fail like BlueZ does (transient error, not found, timeout)."""
        if self._connected:
            raise BleakError("Client is already connected")
        timeout = float(kwargs.get("timeout", self._timeout))
        peripheral = self._world.peripherals.get(self.address.upper())
        if peripheral is None or not peripheral.advertising or peripheral.connected:
            if not self._by_device:
                raise BleakDeviceNotFoundError(self.address, f"Device with address {self.address} was not found.")
            await asyncio.sleep(min(timeout, self._world.connect_timeout_s))
            raise TimeoutError(f"connection to {self.address} timed out")
        await asyncio.sleep(self._world.connect_delay_s)
        if peripheral.faults.connect_failures > 0:
            peripheral.faults.connect_failures -= 1
            raise BleakDBusError("org.bluez.Error.Failed", [peripheral.faults.connect_error])
        if peripheral.connected or not peripheral.advertising:
            raise TimeoutError(f"connection to {self.address} timed out")
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the driver of a previous connection that has not noticed its end yet
        self._peripheral = peripheral
        peripheral.connect(self._world.clock.now())
        self._connected = True
        self.services = self._build_services(peripheral)
        self._world.attach(peripheral.address, self)
        self._task = asyncio.create_task(self._drive(peripheral), name=f"sim-bleak-link-{peripheral.address}")

    async def disconnect(self) -> None:
        """Disconnect (no-op when not connected); the disconnected callback fires as with BlueZ."""
        if not self._connected or self._peripheral is None:
            return
        self._peripheral.disconnect(self._world.clock.now())
        self._on_disconnected()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            await _cancel_and_wait(task)

    def _on_disconnected(self) -> None:
        if not self._connected:
            return
        self._connected = False
        self._callbacks.clear()
        self.services = None
        if self._peripheral is not None:
            self._world.detach(self._peripheral.address)
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Simulated devices accept pairing (bonding is implicit)."""

    async def unpair(self) -> None:
        """Unpairing disconnects, as on BlueZ."""
        await self.disconnect()

    # --- GATT table -------------------------------------------------------------------------------------------------
    def _build_services(self, peripheral: SimPeripheral) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        handle = 1
        for spec in peripheral.services:
            if self._requested_services is not None and spec.uuid not in self._requested_services:
                continue
            service = BleakGATTService(spec, handle, spec.uuid)
            collection.add_service(service)
            handle += 1
            for char_spec in spec.characteristics:
                handle += 1  # declaration; the value handle follows (as BlueZ reports it)
                char = BleakGATTCharacteristic(
                    char_spec, handle, char_spec.uuid, list(char_spec.properties), lambda: self.mtu_size - 3, service
                )
                collection.add_characteristic(char)
                handle += 1
                if "notify" in char_spec.properties or "indicate" in char_spec.properties:
                    collection.add_descriptor(BleakGATTDescriptor(None, handle, CCCD_UUID, char))
                    handle += 1
        return collection

    def _require(self) -> SimPeripheral:
        if not self._connected or self._peripheral is None:
            raise BleakError("Not connected")
        return self._peripheral

    # --- I/O --------------------------------------------------------------------------------------------------------
    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        """Read the characteristic value."""
        peripheral = self._require()
        try:
            return bytearray(peripheral.read(characteristic.uuid, self._world.clock.now()))
        except AttError as exc:
            raise BleakGATTProtocolError(exc.code) from exc

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        """Only CCCDs exist: 0x0001 notifications, 0x0002 indications, 0x0000 off."""
        peripheral = self._require()
        if not peripheral.is_subscribed(descriptor.characteristic_uuid):
            return bytearray(b"\x00\x00")
        props = peripheral.characteristic(descriptor.characteristic_uuid).properties
        return bytearray(b"\x02\x00" if "indicate" in props else b"\x01\x00")

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        """Write (RACP requests, device time); the peripheral's answers arrive as indications."""
        peripheral = self._require()
        try:
            peripheral.write(characteristic.uuid, bytes(data), self._world.clock.now())
        except AttError as exc:
            raise BleakGATTProtocolError(exc.code) from exc
        self.wake()

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        """Write a CCCD directly (values arrive only to `start_notify` callbacks)."""
        peripheral = self._require()
        raw = bytes(data)
        now = self._world.clock.now()
        try:
            if raw[:1] != b"\x00":
                peripheral.subscribe(descriptor.characteristic_uuid, now)
            else:
                peripheral.unsubscribe(descriptor.characteristic_uuid, now)
        except AttError as exc:
            raise BleakGATTProtocolError(exc.code) from exc
        self.wake()

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        """Enable notifications or indications (the CCCD write) and route the values to `callback`."""
        peripheral = self._require()
        if "notify" not in characteristic.properties and "indicate" not in characteristic.properties:
            raise BleakError(f"characteristic {characteristic.uuid} does not support notify or indicate")
        self._callbacks[characteristic.uuid] = callback
        try:
            peripheral.subscribe(characteristic.uuid, self._world.clock.now())
        except AttError as exc:
            del self._callbacks[characteristic.uuid]
            raise BleakGATTProtocolError(exc.code) from exc
        self.wake()

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        """Disable notifications or indications."""
        peripheral = self._require()
        self._callbacks.pop(characteristic.uuid, None)
        peripheral.unsubscribe(characteristic.uuid, self._world.clock.now())

    # --- driver -----------------------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Run the peripheral now (after a write, a subscription, or a fault).

        A link the peripheral dropped is processed at once: `is_connected` turns False and the disconnected callback
        runs before the fault-injection call returns, so a test can reconnect right away.
        """
        peripheral = self._peripheral
        if self._connected and peripheral is not None and not peripheral.connected:
            self._deliver(peripheral)
        self._wake.set()

    def _deliver(self, peripheral: SimPeripheral) -> bool:
        """Deliver queued events; False once the link is lost."""
        while (event := peripheral.next_event()) is not None:
            if isinstance(event, LinkLost):
                logger.debug("%s: link lost (%s)", peripheral.address, event.reason)
                self._on_disconnected()
                return False
            if isinstance(event, Notification):
                callback = self._callbacks.get(event.char_uuid)
                if callback is None:
                    continue
                try:
                    callback(bytearray(event.data))
                except Exception:
                    logger.exception("notification callback for %s failed", event.char_uuid)
        return self._connected

    async def _drive(self, peripheral: SimPeripheral) -> None:
        clock = self._world.clock
        me = asyncio.current_task()
        while self._task is me and self._deliver(peripheral):
            timer = peripheral.get_timer()
            self._wake.clear()
            delay = None if timer is None else clock.real_delay(timer)
            if delay is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            else:
                await asyncio.sleep(0)
            if not self._connected or self._task is not me:
                return
            now = clock.now()
            try:
                peripheral.handle_timer(now)
            except Exception:
                # A bug in a simulated device behaves like a firmware crash: the link drops.
                logger.exception("simulated device %s failed", peripheral.address)
                peripheral.drop_link("simulated device fault", now)


def bleak_backends(world: SimWorld | None = None) -> tuple[type[SimBleakScanner], type[SimBleakClient]]:
    """`(scanner_backend, client_backend)` to pass as `backend=` to `BleakScanner` and `BleakClient`.

    With `world`, both are bound to it; without, they use the world current at call time (`use_world`).
    """
    if world is None:
        return SimBleakScanner, SimBleakClient
    return SimBleakScanner.for_world(world), SimBleakClient.for_world(world)
