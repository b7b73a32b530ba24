"""The user-space half of the ``delay-line`` link backend (:mod:`teleconsult.chaos.netem`): TUN devices that a veth's
ingress is redirected to, and one thread that drops, holds and releases their packets.

A packet read from a TUN device (``IFF_TUN | IFF_NO_PI``: a bare IPv4 packet) is dropped (an outage: the black hole;
loss: a Bernoulli draw), released at once (no delay; or a reordering draw: it overtakes the queue, netem's
``reorder``), or held until ``now + U(delay - jitter, delay + jitter)`` in one heap for every direction; released
packets are written back into the same TUN device, which the kernel then receives as if from the wire. Each direction
has its own seeded random generator (same seed, same drops) and counters. At most :data:`QUEUE_LIMIT` packets are
held per direction (tail drop beyond, counted as ``overflow``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import heapq
import os
import random
import selectors
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from teleconsult.errors import TeleconsultError

if TYPE_CHECKING:
    from teleconsult.chaos.netem import LinkProfile

NETNS_DIR: Final = Path("/run/netns")
QUEUE_LIMIT: Final = 10_000
"""Packets a delay line holds per direction before it tail-drops (netem's default limit is 1000)."""

_CLONE_NEWNET: Final = 0x4000_0000
_TUNSETIFF: Final = 0x4004_54CA
_IFF_TUN: Final = 0x0001
_IFF_NO_PI: Final = 0x1000


class TunError(TeleconsultError):
    """A TUN device could not be made."""


_libc = ctypes.CDLL(None, use_errno=True)


def open_tun(name: str, netns: str | None = None) -> int:
    """Create TUN device ``name`` (in namespace ``netns``) owned by a non-blocking fd of this process; the device
    disappears when the fd is closed. The namespace is entered by a short-lived thread (setns affects one thread)."""
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            if netns is not None:
                nsfd = os.open(NETNS_DIR / netns, os.O_RDONLY)
                try:
                    if _libc.setns(nsfd, _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns {netns}: {os.strerror(err)}")
                finally:
                    os.close(nsfd)
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
            except OSError:
                os.close(fd)
                raise
            result["fd"] = fd
        except OSError as exc:
            result["error"] = exc

    t = threading.Thread(target=work, name=f"tun-{name}")
    t.start()
    t.join()
    if "error" in result:
        raise TunError(f"TUN device {name}: {result['error']}")
    return int(result["fd"])


@dataclass
class _Direction:
    """One direction of one link: a TUN fd, its impairments and counters."""

    fd: int
    rng: random.Random
    profile: LinkProfile
    down: bool = False
    packets: int = 0
    bytes: int = 0
    lost: int = 0
    blackholed: int = 0
    overflow: int = 0
    reordered: int = 0
    queued: int = 0

    def counters(self) -> dict[str, int]:
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "lost": self.lost,
            "blackholed": self.blackholed,
            "overflow": self.overflow,
            "reordered": self.reordered,
        }


class DelayLine:
    """One thread holding and releasing the packets of every redirected direction (see the module docstring)."""

    def __init__(self) -> None:
        self._dirs: dict[int, _Direction] = {}
        self._heap: list[tuple[float, int, int, bytes]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._stop = False
        self._thread = threading.Thread(target=self._main, name="netem-delay-line", daemon=True)
        self.error: BaseException | None = None

    def add(self, fd: int, profile: LinkProfile, seed: int) -> _Direction:
        d = _Direction(fd, random.Random(seed), profile)  # noqa: S311 - reproducible impairments, not crypto
        with self._lock:
            self._dirs[fd] = d
            self._sel.register(fd, selectors.EVENT_READ)
        self._kick()
        return d

    def start(self) -> None:
        self._thread.start()

    def set_down(self, d: _Direction, down: bool) -> None:
        """An outage (black hole) starts or ends; what the line holds is dropped at its start."""
        with self._lock:
            d.down = down
            if down:
                kept = [item for item in self._heap if item[2] != d.fd]
                d.blackholed += len(self._heap) - len(kept)
                d.queued = 0
                self._heap = kept
                heapq.heapify(self._heap)

    def close(self) -> None:
        self._stop = True
        self._kick()
        if self._thread.is_alive():
            self._thread.join(5)
        for fd in list(self._dirs):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._dirs.clear()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._sel.close()

    def _kick(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _main(self) -> None:
        try:
            while not self._stop:
                with self._lock:
                    due = self._heap[0][0] if self._heap else None
                timeout = 0.5 if due is None else max(0.0, due - time.monotonic())
                for key, _ in self._sel.select(timeout):
                    if key.fd == self._wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                    else:
                        self._read(int(key.fd))
                self._release()
        except BaseException as exc:  # noqa: BLE001 - reported by LinkEmulator.check()
            self.error = exc

    def _read(self, fd: int) -> None:
        d = self._dirs.get(fd)
        if d is None:
            return
        for _ in range(256):
            try:
                pkt = os.read(fd, 65_536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.EIO):
                    return
                raise
            now = time.monotonic()
            with self._lock:
                d.packets += 1
                d.bytes += len(pkt)
                p = d.profile
                if d.down:
                    d.blackholed += 1
                    continue
                if p.loss and d.rng.random() < p.loss:
                    d.lost += 1
                    continue
                if not p.delays:
                    self._write(d, pkt)
                    continue
                if p.reorder and d.rng.random() < p.reorder:
                    d.reordered += 1
                    self._write(d, pkt)
                    continue
                if d.queued >= QUEUE_LIMIT:
                    d.overflow += 1
                    continue
                delay = d.rng.uniform(p.delay_ms - p.jitter_ms, p.delay_ms + p.jitter_ms) / 1000
                self._seq += 1
                d.queued += 1
                heapq.heappush(self._heap, (now + delay, self._seq, fd, pkt))

    def _release(self) -> None:
        now = time.monotonic()
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                _, _, fd, pkt = heapq.heappop(self._heap)
                d = self._dirs.get(fd)
                if d is not None:
                    d.queued -= 1
                    self._write(d, pkt)

    @staticmethod
    def _write(d: _Direction, pkt: bytes) -> None:
        try:
            os.write(d.fd, pkt)
        except OSError as exc:  # the stack refused it (e.g. a full backlog): as a drop on the wire
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.EINVAL, errno.EIO):
                raise
            d.overflow += 1
