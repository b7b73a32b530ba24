"""MQTT publisher: outbox -> batches -> broker, on paho-mqtt 2 (``CallbackAPIVersion.VERSION2``, MQTT v5).

Contract
- Receipt mode (default): PUBACK marks a batch ``sent``; its readings leave the outbox only when the server's commit
  receipt names the batch (:mod:`gateway_agent.receipts`). A batch without receipt ``receipt_timeout`` seconds after its
  PUBACK is re-sent with the same ids; after ``fallback_after`` such timeouts with no receipt on the connection the
  publisher falls back to PUBACK mode (an old server) with a warning.
- PUBACK mode (``receipts=False``, or the fallback): a reading leaves the outbox when the PUBACK of its batch arrived
  with a success reason code.
- Batches hold at most ``max_readings`` readings and leave when full or ``max_delay`` after the oldest unsent reading
  was noticed; at most ``window`` batches are in flight (published, not yet acknowledged).
- Persistent session: client id = gateway id, ``clean_start=False``, session expiry; paho resends un-acknowledged
  QoS 1 batches (same payload, same reading ids) after a reconnect. After a restart, the outbox replays them instead.
- Last Will: retained ``offline`` on ``tbib/v1/gw/{id}/status``; retained ``online`` is published on every connect.
- Reconnect with jittered exponential backoff; refused credentials are reported as :class:`BrokerAuthError` in
  :attr:`MqttPublisher.last_error` (the link keeps retrying with a longer backoff).

:class:`~gateway_agent.batching.BatchPlanner` and :class:`~gateway_agent.receipts.ReceiptTracker` are the pure cores
(no socket, no clock); :class:`MqttPublisher` is the asyncio adapter: paho's
socket is driven from the event loop (``loop_read``/``loop_write``/``loop_misc``); only the blocking TCP/TLS connect
runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway_agent.batching import Backoff, Batch, BatchPlanner
from gateway_agent.errors import BrokerAuthError, BrokerError
from gateway_agent.outbox import Outbox, OutboxEntry
from gateway_agent.payload import (
    commands_topic,
    encode_batch,
    encode_event,
    events_topic,
    readings_topic,
    receipts_topic,
    status_topic,
)
from gateway_agent.receipts import ReceiptMode, ReceiptTracker, batch_field, parse_receipt

log = logging.getLogger(__name__)

__all__ = ["Backoff", "Batch", "BatchPlanner", "BrokerParams", "LinkState", "MqttPublisher", "PublisherStats"]

_AUTH_REASONS: Final = frozenset({0x86, 0x87, 0x8C})  # bad user name or password, not authorized, bad auth method


class _PahoClient(mqtt.Client):
    """paho 2.2 leaks the TLS socket when the handshake fails (``_ssl_wrap_socket``): close it, then re-raise."""

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        ctx = self._ssl_context
        assert ctx is not None
        assert ctx.check_hostname  # our contexts come from ssl.create_default_context
        ssl_sock = ctx.wrap_socket(tcp_sock, server_hostname=self._host, do_handshake_on_connect=False)
        try:
            ssl_sock.settimeout(self._connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock


# ------------------------------------------------------------------------------------------------ asyncio adapter
class LinkState(enum.StrEnum):
    """The broker link as shown in the status file."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    AUTH_FAILED = "auth_failed"


@dataclass(frozen=True, slots=True)
class BrokerParams:
    """How to reach the broker."""

    host: str
    port: int
    client_id: str
    tls: bool = False
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive: int = 30
    session_expiry: int = 7 * 24 * 3600
    connect_timeout: float = 10.0
    fallbacks: tuple[tuple[str, int], ...] = ()
    """More (host, port) nodes of the same broker cluster: after a failed connect or a lost link, the next one is
    tried (round robin; docs/scale-out.md)."""
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5
    """``mqtt.MQTTv5`` or ``mqtt.MQTTv311`` (RabbitMQ 3.10's and NATS 2.9's MQTT speak 3.1.1 only)."""

    def endpoints(self) -> list[tuple[str, int]]:
        """Every node, ``(host, port)`` first."""
        return [(self.host, self.port), *self.fallbacks]


@dataclass(slots=True)
class PublisherStats:
    """Counters for the status file and the benchmark."""

    batches_published: int = 0
    readings_acked: int = 0
    """Readings whose batch the broker acknowledged (PUBACK)."""
    readings_receipted: int = 0
    """Readings removed from the outbox by a commit receipt."""
    readings_rejected: int = 0
    receipts: int = 0
    batches_resent: int = 0
    fallbacks: int = 0
    pubacks_failed: int = 0
    connects: int = 0
    connect_failures: int = 0


class MqttPublisher:
    """Drain an :class:`Outbox` to the broker; call :meth:`notify` after appending readings."""

    def __init__(
        self,
        outbox: Outbox,
        params: BrokerParams,
        *,
        gateway_id: str,
        max_readings: int = 100,
        max_delay: float = 0.2,
        window: int = 20,
        backoff: Backoff | None = None,
        clock: Callable[[], float] | None = None,
        on_acked: Callable[[Sequence[str]], None] | None = None,
        auth_backoff_floor: float = 30.0,
        receipts: bool = True,
        receipt_timeout: float = 30.0,
        fallback_after: int = 5,
        on_command: Callable[[bytes], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.params = params
        self.gateway_id = gateway_id
        self.planner = BatchPlanner(max_readings=max_readings, max_delay=max_delay, window=window)
        self.backoff = backoff or Backoff()
        self.state = LinkState.DISCONNECTED
        self.last_error: BrokerError | None = None
        self.stats = PublisherStats()
        self.receipts = receipts
        """Name batches and wait for commit receipts (False: an old gateway, PUBACK mode only)."""
        self.tracker = ReceiptTracker(timeout=receipt_timeout, fallback_after=fallback_after)
        if not receipts:
            self.tracker.mode = ReceiptMode.PUBACK
        self._resend: deque[tuple[int, int]] = deque()
        self._on_acked = on_acked
        self.on_command = on_command
        """Called (event-loop thread) with each message on ``.../commands``; subscribed on every connection when set."""
        self._events: deque[bytes] = deque(maxlen=1000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._stopping = False
        self.auth_backoff_floor = auth_backoff_floor
        self._clock = clock
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        self._connected = asyncio.Event()
        self._link_lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._misc: asyncio.Task[None] | None = None
        self._sock: Any = None
        self._endpoint = 0
        self._client = self._make_client()

    # -- public API ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start connecting and publishing in the background."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self.outbox.depth():
            self.planner.noticed(self._now() - self.planner.max_delay)
        self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.gateway_id}")

    async def stop(self) -> None:
        """Publish ``offline`` (retained), disconnect and stop. Un-acknowledged readings stay in the outbox."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.state is LinkState.CONNECTED:
            info = self._client.publish(status_topic(self.gateway_id), b"offline", qos=1, retain=True)
            try:
                await asyncio.wait_for(self._until(info.is_published), timeout=2.0)
            except TimeoutError:
                log.warning("offline status not acknowledged before disconnect")
            self._client.disconnect()
            self._client.loop_write()
        self._stop_misc()
        self.state = LinkState.DISCONNECTED

    def notify(self) -> None:
        """Readings were appended to the outbox."""
        self.planner.noticed(self._now())
        self._wake.set()

    def publish_event(self, kind: str, **fields: Any) -> None:
        """Queue an event for ``.../events`` (QoS 1, not durable: at most 1000 kept while the link is down)."""
        self._events.append(encode_event(self.gateway_id, datetime.now(UTC), kind, **fields))
        self._wake.set()

    async def wait_connected(self) -> None:
        """Wait until the broker accepted us (wrap in ``asyncio.timeout``)."""
        await self._connected.wait()

    async def drain(self) -> None:
        """Wait until the outbox is empty and nothing is in flight (wrap in ``asyncio.timeout``): every reading
        receipted (receipt mode) or acknowledged by the broker (PUBACK mode)."""
        while self.outbox.depth() or self.planner.inflight():
            self._acked.clear()
            self._wake.set()
            await self._acked.wait()

    # -- paho client and socket plumbing -------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        p = self.params
        v5 = p.protocol == mqtt.MQTTv5
        client = _PahoClient(
            CallbackAPIVersion.VERSION2,
            client_id=p.client_id,
            protocol=p.protocol,
            reconnect_on_failure=False,
            clean_session=None if v5 else False,
        )
        client.max_inflight_messages_set(self.planner.window + 2)
        client.max_queued_messages_set(0)
        if p.username is not None:
            client.username_pw_set(p.username, p.password)
        if p.tls:
            ctx = ssl.create_default_context(cafile=p.ca_file)
            if p.client_cert:
                ctx.load_cert_chain(p.client_cert, p.client_key)
            client.tls_set_context(ctx)
        client.will_set(status_topic(self.gateway_id), b"offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    def _threadsafe(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the event-loop thread (paho calls socket hooks from the connect thread too)."""
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def _on_socket_open(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        def register() -> None:
            assert self._loop is not None
            self._sock = sock
            self._loop.add_reader(sock, client.loop_read)
            self._stop_misc()
            self._misc = self._loop.create_task(self._misc_loop())

        self._threadsafe(register)

    def _on_socket_close(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        def unregister() -> None:
            assert self._loop is not None
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            if sock is self._sock:
                self._sock = None
                self._link_lost.set()

        self._threadsafe(unregister)

    def _on_register_write(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        def register() -> None:
            assert self._loop is not None
            if sock is self._sock:
                self._loop.add_writer(sock, client.loop_write)

        self._threadsafe(register)

    def _on_unregister_write(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        def unregister() -> None:
            assert self._loop is not None
            self._loop.remove_writer(sock)

        self._threadsafe(unregister)

    async def _misc_loop(self) -> None:
        while self._client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:  # noqa: ASYNC110 (keepalive tick)
            await asyncio.sleep(1.0)

    def _stop_misc(self) -> None:
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None

    # -- paho callbacks (event-loop thread) -----------------------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode, _props: Properties | None
    ) -> None:
        if reason.is_failure:
            err_cls = BrokerAuthError if reason.value in _AUTH_REASONS else BrokerError
            self.last_error = err_cls(
                "broker {}:{} refused the connection: {}".format(*self._target(), reason.getName()),
                reason_code=reason.value,
                reason=reason.getName(),
            )
            self.state = LinkState.AUTH_FAILED if err_cls is BrokerAuthError else LinkState.DISCONNECTED
            self.stats.connect_failures += 1
            log.error("%s", self.last_error)
            return
        self.state = LinkState.CONNECTED
        self.last_error = None
        self.stats.connects += 1
        self.backoff.reset()
        if self.receipts:
            # every connection: a broker that lost our session (crash before its autosave) lost the subscription too
            client.subscribe(receipts_topic(self.gateway_id), qos=1)
            self.tracker.connected()
        if self.on_command is not None:
            client.subscribe(commands_topic(self.gateway_id), qos=1)
        client.publish(status_topic(self.gateway_id), b"online", qos=1, retain=True)
        self._connected.set()
        self._wake.set()
        log.info("connected to %s:%s", *self._target())

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None) -> None:
        if self.state is LinkState.CONNECTED:
            (log.info if self._stopping else log.warning)("link to broker closed: %s", reason.getName())
            self.state = LinkState.DISCONNECTED
        self._connected.clear()
        self._link_lost.set()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties | None) -> None:
        batch = self.planner.acked(mid, success=not reason.is_failure)
        if batch is None:
            return  # the status/event messages, or a batch already forgotten
        if reason.is_failure:
            self.stats.pubacks_failed += 1
            log.error("broker refused a batch of %d readings: %s", len(batch.ids), reason.getName())
            return
        self.stats.readings_acked += len(batch.ids)
        if self.tracker.mode is ReceiptMode.RECEIPTS:
            self.outbox.mark_sent(batch.first_seq, batch.last_seq)
            self.tracker.published(batch.first_seq, batch.last_seq, self._now())
        else:
            self.outbox.ack(batch.ids)
        if self._on_acked is not None:
            self._on_acked(batch.ids)
        self._acked.set()
        self._wake.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == commands_topic(self.gateway_id) and self.on_command is not None:
            try:
                self.on_command(bytes(msg.payload))
            except Exception:  # a command handler bug must not take the link down (it is logged)
                log.exception("command handler failed")
            return
        if msg.topic != receipts_topic(self.gateway_id):
            return
        receipt = parse_receipt(bytes(msg.payload), gateway_id=self.gateway_id, epoch=self.outbox.epoch)
        if isinstance(receipt, str):
            log.warning("ignored an invalid receipt: %s", receipt)
            return
        removed = 0
        for first, last in receipt.ranges:
            removed += self.outbox.delete_range(first, last)
        if receipt.ids:
            removed += self.outbox.ack(receipt.ids)
        rejected_ids = [r.id for r in receipt.rejected if r.id is not None]
        if rejected_ids:
            removed += self.outbox.ack(rejected_ids)
        for r in receipt.rejected[:10]:
            log.warning("server rejected reading %s: %s", r.id or "?", r.reason)
        if len(receipt.rejected) > 10:
            log.warning("... and %d more rejected readings in that receipt", len(receipt.rejected) - 10)
        self.stats.receipts += 1
        self.stats.readings_rejected += len(receipt.rejected)
        self.stats.readings_receipted += removed
        if self.tracker.received(receipt):
            log.warning("commit receipts arrived again: back to receipt mode")
        self._acked.set()
        self._wake.set()

    def _check_receipts(self) -> None:
        """Overdue receipts: queue their batches for a re-send, or fall back to PUBACK mode."""
        result = self.tracker.handle_timer(self._now())
        if result.fell_back:
            self.stats.fallbacks += 1
            removed = self.outbox.delete_sent()
            self._resend.clear()
            log.warning(
                "no commit receipt after %d timeouts of %.0f s on this connection: the server looks older than the "
                "receipts extension; PUBACK mode now (%d readings acknowledged by the broker removed)",
                self.tracker.timeouts,
                self.tracker.timeout,
                removed,
            )
            self._acked.set()
        for rng in result.resend:
            self._resend.append(rng)
        if result.resend:
            self.stats.batches_resent += len(result.resend)
            log.info("%d batches without receipt after %.0f s: re-sending", len(result.resend), self.tracker.timeout)

    # -- main task ------------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            self._link_lost.clear()
            self.state = LinkState.CONNECTING if self.state is not LinkState.AUTH_FAILED else self.state
            try:
                await asyncio.to_thread(self._connect_blocking)
            except (OSError, ssl.SSLError) as exc:
                self.stats.connect_failures += 1
                self.state = LinkState.DISCONNECTED
                host, port = self._target()
                self.last_error = BrokerError(f"cannot reach broker {host}:{port}: {exc}", reason_code=-1, reason="io")
                self._endpoint += 1  # the next node of the cluster, if any
                await self._sleep_backoff()
                continue
            pump = asyncio.create_task(self._pump())
            try:
                try:
                    async with asyncio.timeout(self.params.connect_timeout):
                        await self._connected_or_lost()
                except TimeoutError:  # TCP up, no CONNACK (a broker restarting, paused): drop it and retry
                    log.warning("no CONNACK within %.0f s: reconnecting", self.params.connect_timeout)
                    self._client.disconnect()
                    self._link_lost.set()
                await self._link_lost.wait()
            finally:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
            self._connected.clear()
            self._stop_misc()
            if self.state is LinkState.CONNECTED:
                self.state = LinkState.DISCONNECTED
            self._endpoint += 1
            await self._sleep_backoff()

    async def _connected_or_lost(self) -> None:
        lost = asyncio.create_task(self._link_lost.wait())
        up = asyncio.create_task(self._connected.wait())
        try:
            await asyncio.wait({lost, up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            up.cancel()

    def _target(self) -> tuple[str, int]:
        nodes = self.params.endpoints()
        return nodes[self._endpoint % len(nodes)]

    def _connect_blocking(self) -> None:
        p = self.params
        host, port = self._target()
        if p.protocol != mqtt.MQTTv5:  # 3.1.1: the persistent session is clean_session=False (set on the client)
            self._client.connect(host, port, keepalive=p.keepalive)
            return
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = p.session_expiry
        self._client.connect(host, port, keepalive=p.keepalive, clean_start=False, properties=props)

    async def _sleep_backoff(self) -> None:
        floor = self.auth_backoff_floor if self.state is LinkState.AUTH_FAILED else 0.0
        delay = self.backoff.next_delay(floor=min(floor, self.backoff.maximum))
        log.info("reconnecting in %.1f s", delay)
        await asyncio.sleep(delay)

    async def _pump(self) -> None:
        """While connected: publish due batches and queued events; sleep until notified or the batch timer fires."""
        await self._connected.wait()
        while True:
            self._wake.clear()
            self._check_receipts()
            self._publish_due()
            timers = [t for t in (self.planner.get_timer(), self.tracker.get_timer()) if t is not None]
            timeout = None if not timers else max(0.0, min(timers) - self._now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _publish_due(self) -> None:
        topic = readings_topic(self.gateway_id)
        while self._events and self.state is LinkState.CONNECTED:
            self._client.publish(events_topic(self.gateway_id), self._events.popleft(), qos=1)
        while self._resend and self.state is LinkState.CONNECTED and self.planner.room():
            first, last = self._resend.popleft()
            entries = self.outbox.entries_between(first, last)
            if entries and not self._publish_batch(topic, entries, resend=True):
                self._resend.appendleft((first, last))
                return
        while self.state is LinkState.CONNECTED and self.planner.room():
            entries = self.outbox.peek_batch(self.planner.max_readings, after_seq=self.planner.cursor)
            if not entries:
                self.planner.nothing_unsent()
                return
            now = self._now()
            if not self.planner.should_send(entries, now):
                return
            if not self._publish_batch(topic, entries, now=now):
                return

    def _publish_batch(
        self, topic: str, entries: Sequence[OutboxEntry], *, now: float = 0.0, resend: bool = False
    ) -> bool:
        named = batch_field(self.outbox.epoch, entries[0].seq, entries[-1].seq) if self.receipts else None
        payload = encode_batch(self.gateway_id, datetime.now(UTC), [e.body for e in entries], batch=named)
        info = self._client.publish(topic, payload, qos=1)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("publish refused by the client (%s); will retry", info.rc)
            return False
        # NO_CONN: paho keeps the message and sends it (same mid) after the reconnect.
        if resend:
            self.planner.resent(info.mid, entries)
        else:
            self.planner.sent(info.mid, entries, now=now)
        self.stats.batches_published += 1
        return True

    async def _until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():  # noqa: ASYNC110 (paho has no awaitable per message)
            await asyncio.sleep(0.01)

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time() if self._loop is not None else 0.0
