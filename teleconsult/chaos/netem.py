"""A bad 5G link between each simulated gateway and the broker: network namespaces, veth pairs and ``tc``.

Topology of one link (``ip``/``tc`` from iproute2; nothing else is installed)::

    gateway process                     |  broker (root namespace)
    netns tbib-netem-<pid>-<run>-<i>    |
      veth <run><i>n 10.x.y.2/30  <--- veth pair --->  veth <run><i>h 10.x.y.1/30
      egress: tbf rate cap              |              egress: tbf rate cap
      ingress: mirred -> tun <run><i>d  |              ingress: mirred -> tun <run><i>u
               (downlink delay line)    |                       (uplink delay line)

Impairments (:class:`LinkProfile`): loss, delay with jitter, reordering, a rate cap, and outages (a black hole: every
packet of both directions vanishes, no RST, as when the radio is lost). Two backends:

- ``netem`` (the kernel's ``sch_netem``) when ``tc qdisc add ... netem`` works: one netem qdisc (with its own rate) on
  each veth end; an outage is ``netem loss 100%``.
- ``delay-line`` when it does not (kernels built without ``CONFIG_NET_SCH_NETEM``, such as this project's sandbox VM:
  ``tc`` answers "Specified qdisc kind is unknown" in every namespace, the root one too, and the kernel has no module
  support). The rate cap stays in the kernel (``tbf`` on each veth egress); each veth's ingress redirects IPv4 packets
  (``tc filter ... u32 ... action mirred egress redirect``) to a TUN device of the same namespace, read by
  :class:`DelayLine` (a thread of this process) which drops (loss, outage), holds (delay, jitter) and releases
  packets, some ahead of the queue (reordering, netem's semantics), by writing them back into the TUN device: the
  kernel then receives them as if they came off the wire. ARP is not redirected.

Needed: CAP_NET_ADMIN (links, addresses, qdiscs, TUN) and CAP_SYS_ADMIN (``ip netns add``/``exec`` mount and enter
namespaces), ``/dev/net/tun``, ``ip`` and ``tc``. :func:`probe` says what is missing; callers skip with its reason.

Clean-up: every name carries the owner's pid and a random run id (parallel runs never collide); deleting a namespace
deletes its veth pair (both ends), qdiscs and filters; the TUN devices vanish with the file descriptors of this
process (even on kill -9). :meth:`LinkEmulator.close` runs from ``finally`` blocks, ``atexit``, and the chaos CLI
turns SIGTERM/SIGHUP into an exception so that it runs there too; :func:`sweep` deletes what a killed run left
(namespaces of dead owners, and their processes).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import os
import random
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from teleconsult.chaos.delayline import NETNS_DIR, DelayLine, TunError, open_tun
from teleconsult.errors import TeleconsultError

NS_PREFIX: Final = "tbib-netem-"
LOCK_FILE: Final = Path("/run/tbib-netem.lock")
SUBNETS: Final = ipaddress.IPv4Network("10.213.0.0/16")
"""Where the /30 of each link is taken (the root namespace's addresses are checked first)."""
CAP_NET_ADMIN: Final = 12
CAP_SYS_ADMIN: Final = 21


class LinkError(TeleconsultError):
    """The link emulator cannot run here, or a command failed."""


# --- profiles -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """Impairments of both directions of a link (each direction draws its own random numbers)."""

    name: str = "custom"
    loss: float = 0.0
    """Probability that a packet is dropped (per packet, per direction)."""
    delay_ms: float = 0.0
    """Mean one-way delay."""
    jitter_ms: float = 0.0
    """Each packet's delay is uniform in ``delay_ms +- jitter_ms`` (so 175 +- 125 is 50-300 ms); packets reorder
    when their delays differ by more than their spacing."""
    reorder: float = 0.0
    """Probability that a packet skips the delay and overtakes the queue (netem ``reorder``)."""
    rate_bytes_s: float | None = None
    """Rate cap of each direction (``tbf``), bytes per second."""

    def __post_init__(self) -> None:
        if not (0 <= self.loss < 1 and 0 <= self.reorder <= 1):
            raise LinkError(f"link profile {self.name}: loss must be in [0, 1), reorder in [0, 1]")
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.jitter_ms > self.delay_ms:
            raise LinkError(f"link profile {self.name}: 0 <= jitter <= delay")
        if self.rate_bytes_s is not None and self.rate_bytes_s < 10_000:
            raise LinkError(f"link profile {self.name}: rate below 10 kB/s")

    @property
    def delays(self) -> bool:
        """Whether packets must be held (delay, jitter or reordering)."""
        return self.delay_ms > 0

    def describe(self) -> str:
        """``loss 2%, delay 50-300 ms, reorder 5%, rate 10 MB/s`` (what the summary and the docs show)."""
        parts = []
        if self.loss:
            parts.append(f"loss {self.loss * 100:g}%")
        if self.delay_ms:
            lo, hi = self.delay_ms - self.jitter_ms, self.delay_ms + self.jitter_ms
            parts.append(f"delay {lo:g}-{hi:g} ms" if self.jitter_ms else f"delay {self.delay_ms:g} ms")
        if self.reorder:
            parts.append(f"reorder {self.reorder * 100:g}%")
        if self.rate_bytes_s:
            parts.append(f"rate {self.rate_bytes_s / 1e6:g} MB/s")
        return ", ".join(parts) or "no impairment"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "loss": self.loss,
            "delay_ms": [self.delay_ms - self.jitter_ms, self.delay_ms + self.jitter_ms],
            "reorder": self.reorder,
            "rate_bytes_s": self.rate_bytes_s,
            "describe": self.describe(),
        }


MB: Final = 1_000_000
PROFILES: Final[dict[str, LinkProfile]] = {
    "clean": LinkProfile("clean"),
    "loss1": LinkProfile("loss1", loss=0.01),
    "loss5": LinkProfile("loss5", loss=0.05),
    "jitter": LinkProfile("jitter", delay_ms=175, jitter_ms=125),
    "reorder": LinkProfile("reorder", delay_ms=100, jitter_ms=20, reorder=0.25),
    "capped": LinkProfile("capped", rate_bytes_s=10 * MB),
    "5g": LinkProfile("5g", loss=0.03, delay_ms=175, jitter_ms=125, reorder=0.05, rate_bytes_s=10 * MB),
}
"""Named profiles (issue 15: loss 1-5 %, 50-300 ms jitter, reordering, a 10 MB/s cap); ``5g`` is all of them."""

_SPEC_ITEM: Final = re.compile(r"^\s*(loss|delay|jitter|reorder|rate)\s*=\s*([0-9.]+)\s*(%|ms|MB/s|kB/s)?\s*$")


def parse_profile(text: str) -> LinkProfile:
    """A named profile (:data:`PROFILES`) or ``loss=2%,delay=175ms,jitter=125ms,reorder=5%,rate=10MB/s``."""
    if text in PROFILES:
        return PROFILES[text]
    values: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        m = _SPEC_ITEM.match(item)
        if m is None:
            known = ", ".join(PROFILES)
            raise LinkError(f"bad link profile item {item!r} (profiles: {known}; or loss=2%,delay=175ms,...)")
        key, number, unit = m[1], float(m[2]), m[3]
        if key in ("loss", "reorder"):
            values[key] = number / 100 if unit == "%" else number
        elif key in ("delay", "jitter"):
            values[f"{key}_ms"] = number
        else:
            values["rate_bytes_s"] = number * (1000 if unit == "kB/s" else MB)
    return LinkProfile(text, **values)


# --- capabilities ---------------------------------------------------------------------------------------------------


def _capabilities() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def probe() -> str | None:
    """None when links can be emulated here, else the reason (to skip with)."""
    if not Path("/proc/self/ns/net").exists():
        return "not Linux (network namespaces are Linux-only)"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (install iproute2)"
    caps = _capabilities()
    lacking = [name for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"))
               if not caps >> bit & 1]  # fmt: skip
    if lacking:
        return f"needs {' and '.join(lacking)} (run as root, or a container with --cap-add NET_ADMIN,SYS_ADMIN)"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun missing (the delay line needs TUN devices)"
    name = f"{NS_PREFIX}{os.getpid()}-probe{uuid.uuid4().hex[:4]}"
    done = _ip("netns", "add", name, check=False)
    if done.returncode != 0:
        return f"ip netns add failed: {done.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


_netem: list[bool] = []


def kernel_has_netem() -> bool:
    """Whether ``tc qdisc add ... netem`` works (tried once per process on a veth in a scratch namespace)."""
    if not _netem:
        ns = f"{NS_PREFIX}{os.getpid()}-nq{uuid.uuid4().hex[:4]}"
        ok = False
        if _ip("netns", "add", ns, check=False).returncode == 0:
            try:
                _ip("-n", ns, "link", "add", "nq0", "type", "veth", "peer", "name", "nq1", check=False)
                done = _run(["tc", "-n", ns, "qdisc", "add", "dev", "nq0", "root", "netem", "delay", "1ms"])
                ok = done.returncode == 0
            finally:
                _ip("netns", "del", ns, check=False)
        _netem.append(ok)
    return _netem[0]


# --- commands -------------------------------------------------------------------------------------------------------


def _run(argv: list[str], *, check: bool = False) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - ip/tc with our arguments
    if check and done.returncode != 0:
        raise LinkError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", *args], check=check)


def _tc(ns: str | None, *args: str) -> None:
    _run(["tc", *(("-n", ns) if ns else ()), *args], check=True)


def tbf_args(rate_bytes_s: float) -> list[str]:
    """``tbf`` parameters of a rate cap: a burst of 10 ms at the rate (at least 64 kB, GSO-sized packets are split),
    at most 100 ms of queue (the rest is dropped, as a cell tower's buffer would)."""
    burst = max(64_000, int(rate_bytes_s / 100))
    return ["tbf", "rate", f"{int(rate_bytes_s * 8)}bit", "burst", str(burst), "latency", "100ms"]


def netem_args(profile: LinkProfile, *, outage: bool = False) -> list[str]:
    """``netem`` parameters of a profile (the ``netem`` backend)."""
    args = ["netem", "limit", "10000"]
    if profile.delay_ms:
        args += ["delay", f"{profile.delay_ms:g}ms"]
        if profile.jitter_ms:
            args.append(f"{profile.jitter_ms:g}ms")  # uniform in +- jitter (netem's default distribution)
        if profile.reorder:
            args += ["reorder", f"{profile.reorder * 100:g}%"]
    loss = 1.0 if outage else profile.loss
    if loss:
        args += ["loss", f"{loss * 100:g}%"]
    if profile.rate_bytes_s:
        args += ["rate", f"{int(profile.rate_bytes_s * 8)}bit"]
    return args


# --- links ----------------------------------------------------------------------------------------------------------


@dataclass
class Link:
    """One emulated link: a namespace for the gateway's processes and the broker-side address it reaches."""

    index: int
    netns: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    profile: LinkProfile
    backend: str
    up: Any = None
    """The uplink (gateway -> broker) direction of the delay line."""
    down: Any = None
    outages: int = 0
    outage_s: float = 0.0
    _outage_started: float | None = None

    def exec_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the pid is the program's own)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    @property
    def is_down(self) -> bool:
        return self._outage_started is not None


@dataclass
class LinkEmulator:
    """Links for ``n`` gateways with one profile; :meth:`close` removes everything (idempotent)."""

    profile: LinkProfile
    seed: int = 0
    backend: str = "auto"
    """``auto`` (netem when the kernel has it), ``netem`` or ``delay-line``."""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    links: list[Link] = field(default_factory=list)
    _line: DelayLine | None = None
    _closed: bool = False

    def __post_init__(self) -> None:
        reason = probe()
        if reason is not None:
            raise LinkError(f"link emulation not available: {reason}")
        if self.backend == "auto":
            self.backend = "netem" if kernel_has_netem() else "delay-line"
        elif self.backend == "netem" and not kernel_has_netem():
            raise LinkError(
                "tc netem is not available in this kernel (tc: 'Specified qdisc kind is unknown'); "
                "use the delay-line backend"
            )
        elif self.backend not in ("netem", "delay-line"):
            raise LinkError(f"unknown link backend {self.backend!r}")
        sweep()
        atexit.register(self.close)

    def __enter__(self) -> LinkEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self) -> Link:
        """One more link (its namespace, veth pair, addresses and impairments)."""
        i = len(self.links)
        ns = f"{NS_PREFIX}{os.getpid()}-{self.run_id}-{i}"
        stem = f"tb{self.run_id}{i:02d}"  # 10 characters: + one letter stays within IFNAMSIZ (15)
        link = Link(i, ns, f"{stem}h", f"{stem}n", "", "", self.profile, self.backend)
        self.links.append(link)  # before anything exists: close() removes whatever was made
        _ip("netns", "add", ns)
        with _lock_file():
            net = _free_subnet()
            link.host_ip, link.ns_ip = str(net[1]), str(net[2])
            _ip("link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if, "netns", ns)
            _ip("addr", "add", f"{link.host_ip}/30", "dev", link.host_if)
        _ip("link", "set", link.host_if, "up")
        _ip("-n", ns, "addr", "add", f"{link.ns_ip}/30", "dev", link.ns_if)
        _ip("-n", ns, "link", "set", link.ns_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        # orphans (sockets of a killed gateway) give up after 2 retransmissions instead of 8 (default): the
        # namespace is freed sooner after close()
        _run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_orphan_retries=2"])
        if self.backend == "netem":
            for dev, where in ((link.host_if, None), (link.ns_if, ns)):
                _tc(where, "qdisc", "add", "dev", dev, "root", "handle", "1:", *netem_args(self.profile))
        else:
            self._delay_line(link, i)
        return link

    def _delay_line(self, link: Link, i: int) -> None:
        p = self.profile
        if p.rate_bytes_s:
            _tc(None, "qdisc", "add", "dev", link.host_if, "root", *tbf_args(p.rate_bytes_s))
            _tc(link.netns, "qdisc", "add", "dev", link.ns_if, "root", *tbf_args(p.rate_bytes_s))
        if self._line is None:
            self._line = DelayLine()
            self._line.start()
        up_tun, down_tun = f"tb{self.run_id}{i:02d}u", f"tb{self.run_id}{i:02d}d"
        try:
            up_fd = open_tun(up_tun)
            link.up = self._line.add(up_fd, p, seed=self.seed * 1000 + 2 * i)
            down_fd = open_tun(down_tun, link.netns)
            link.down = self._line.add(down_fd, p, seed=self.seed * 1000 + 2 * i + 1)
        except TunError as exc:
            raise LinkError(str(exc)) from exc
        _ip("link", "set", up_tun, "up")
        _ip("-n", link.netns, "link", "set", down_tun, "up")
        for where, dev, tun in ((None, link.host_if, up_tun), (link.netns, link.ns_if, down_tun)):
            _tc(where, "qdisc", "add", "dev", dev, "ingress")
            _tc(where, "filter", "add", "dev", dev, "parent", "ffff:", "protocol", "ip", "u32", "match", "u32", "0",
                "0", "action", "mirred", "egress", "redirect", "dev", tun)  # fmt: skip

    def set_outage(self, link: Link, down: bool) -> None:
        """Start or end a black-hole outage of one link (both directions)."""
        if down == link.is_down:
            return
        if down:
            link.outages += 1
            link._outage_started = time.monotonic()
        else:
            assert link._outage_started is not None
            link.outage_s += time.monotonic() - link._outage_started
            link._outage_started = None
        if self.backend == "netem":
            for dev, where in ((link.host_if, None), (link.ns_if, link.netns)):
                _tc(where, "qdisc", "change", "dev", dev, "root", "handle", "1:",
                    *netem_args(self.profile, outage=down))  # fmt: skip
        else:
            assert self._line is not None
            self._line.set_down(link.up, down)
            self._line.set_down(link.down, down)

    @contextlib.contextmanager
    def outage(self, links: list[Link] | None = None) -> Iterator[None]:
        """A black hole on ``links`` (default all) inside the block."""
        chosen = self.links if links is None else links
        for link in chosen:
            self.set_outage(link, True)
        try:
            yield
        finally:
            for link in chosen:
                self.set_outage(link, False)

    def check(self) -> None:
        """Raise if the delay line thread died."""
        if self._line is not None and self._line.error is not None:
            raise LinkError(f"delay line failed: {self._line.error!r}")

    def counters(self) -> dict[str, Any]:
        """Per direction, summed over the links (delay-line backend; netem keeps its own ``tc -s`` counters)."""
        out: dict[str, Any] = {"backend": self.backend, "profile": self.profile.to_json(), "links": len(self.links)}
        for attr in ("up", "down"):
            total: dict[str, int] = {}
            for link in self.links:
                d = getattr(link, attr)
                for k, v in (d.counters() if d is not None else {}).items():
                    total[k] = total.get(k, 0) + v
            out["uplink" if attr == "up" else "downlink"] = total
        out["outages"] = sum(link.outages for link in self.links)
        out["outage_s"] = round(sum(link.outage_s for link in self.links), 1)
        return out

    def close(self) -> None:
        """Kill what runs in the namespaces, delete them (and so the veths), close the TUN devices."""
        if self._closed:
            return
        self._closed = True
        for link in self.links:
            remove_netns(link.netns, veth=link.host_if)
        if self._line is not None:
            self._line.close()
            self._line = None
        with contextlib.suppress(ValueError):
            atexit.unregister(self.close)


def remove_netns(name: str, *, veth: str | None = None) -> None:
    """SIGKILL every process inside namespace ``name``, delete its veth pair, then the namespace.

    The veth is deleted explicitly: a namespace whose name is gone lives on while orphaned TCP sockets of its killed
    processes still retransmit (minutes, with unsent data on a black-holed link), and with it the veth pair and the
    host-side address. Without devices, that remnant is invisible and frees itself.
    """
    done = _ip("netns", "pids", name, check=False)
    for pid in done.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    if veth is None:  # sweep: find the namespace's veth from inside
        out = _ip("-n", name, "-o", "link", "show", "type", "veth", check=False).stdout
        names = [m[1] for m in re.finditer(r"^\d+: ([^@:]+)", out, re.M)]
        for dev in names:
            _ip("-n", name, "link", "del", dev, check=False)
    else:
        _ip("link", "del", veth, check=False)
    _ip("netns", "del", name, check=False)


def sweep() -> list[str]:
    """Delete the namespaces of earlier runs whose owner process is gone (a run killed with SIGKILL)."""
    removed: list[str] = []
    try:
        names = os.listdir(NETNS_DIR)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(NS_PREFIX):
            continue
        owner = name.removeprefix(NS_PREFIX).split("-")[0]
        if owner.isdigit() and int(owner) != os.getpid() and not Path(f"/proc/{owner}").exists():
            remove_netns(name)
            removed.append(name)
    return removed


@contextlib.contextmanager
def _lock_file() -> Iterator[None]:
    """Serialize subnet allocation between parallel runs on one host."""
    with LOCK_FILE.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 of :data:`SUBNETS` that no address of the root namespace is in (random first pick, then linear)."""
    used = [
        ipaddress.IPv4Interface(tok)
        for line in _ip("-4", "-o", "addr", "show").stdout.splitlines()
        for tok in line.split()
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+/\d+", tok)
    ]
    subnets = list(SUBNETS.subnets(new_prefix=30))
    start = random.randrange(len(subnets))  # noqa: S311
    for k in range(len(subnets)):
        net = subnets[(start + k) % len(subnets)]
        if not any(iface.network.overlaps(net) for iface in used):
            return net
    raise LinkError(f"no free /30 left in {SUBNETS}")


__all__ = [
    "PROFILES",
    "DelayLine",
    "Link",
    "LinkEmulator",
    "LinkError",
    "LinkProfile",
    "kernel_has_netem",
    "netem_args",
    "parse_profile",
    "probe",
    "sweep",
    "tbf_args",
]
