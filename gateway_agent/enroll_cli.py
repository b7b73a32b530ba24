"""`tbib gateway enroll`: install this gateway's broker credentials and check that the broker accepts them.

The server side issues them: ``tbib pki enroll-gateway GATEWAY_ID`` prints a secret once. On the gateway::

    tbib gateway enroll gw-0001 --broker-url mqtts://broker.example.org:8883 --ca-file /etc/tbib-gateway/ca.pem \\
        --credentials-file /etc/tbib-gateway/credentials.toml [--config /etc/tbib-gateway/gateway.toml]

reads the secret (prompted, or the first line of stdin), writes the credentials file (mode 0600: ``username`` = the
gateway id, ``password`` = the secret), connects once with MQTT v5 to check the broker accepts them (``--no-check`` to
skip), and creates the config file when it does not exist yet. Exit codes: 0 enrolled, 1 refused or unreachable,
2 bad arguments. This module must not import ``teleconsult`` (a gateway has no server stack).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import queue
import re
import ssl
import sys
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

_GATEWAY_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REASONS: Final = {134: "bad user name or password", 135: "not authorized", 136: "server unavailable"}


def add_parser(gw: Any) -> None:
    """Register ``enroll`` under ``tbib gateway``."""
    p: argparse.ArgumentParser = gw.add_parser(
        "enroll",
        help="install this gateway's broker credentials (from `tbib pki enroll-gateway`) and test them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("gateway_id", help="the id given to `tbib pki enroll-gateway` (also the MQTT user name)")
    p.add_argument("--broker-url", required=True, help="mqtt://host:port or mqtts://host:port")
    p.add_argument("--ca-file", type=Path, help="CA certificate of the broker (mqtts)")
    p.add_argument("--credentials-file", type=Path, default=Path("/etc/tbib-gateway/credentials.toml"))
    p.add_argument("--config", type=Path, help="gateway config file to create if it does not exist")
    p.add_argument("--secret-stdin", action="store_true", help="read the secret from the first line of stdin")
    p.add_argument("--no-check", action="store_true", help="do not connect to the broker")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker (default 10)")
    p.set_defaults(func=run)


def _fail(message: str, code: int = 1) -> int:
    sys.stderr.write(f"tbib gateway enroll: error: {message}\n")
    return code


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def run(args: argparse.Namespace) -> int:
    """Write the credentials, check them, create the config."""
    if not _GATEWAY_ID_RE.match(args.gateway_id):
        return _fail(f"invalid gateway id {args.gateway_id!r}", 2)
    url = urlsplit(args.broker_url)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        return _fail("--broker-url must look like mqtt://host:1883 or mqtts://host:8883", 2)
    if args.secret_stdin or not sys.stdin.isatty():
        secret = sys.stdin.readline().strip()
    else:
        secret = getpass.getpass("secret from `tbib pki enroll-gateway`: ").strip()
    if not secret:
        return _fail("empty secret", 2)
    if not args.no_check:
        problem = check_credentials(args.broker_url, args.gateway_id, secret, args.ca_file, args.timeout)
        if problem is not None:
            return _fail(f"the broker refused the credentials: {problem}")
    try:
        write_credentials(args.credentials_file, args.gateway_id, secret)
        created = args.config is not None and write_config_if_missing(
            args.config, args.gateway_id, args.broker_url, args.ca_file, args.credentials_file
        )
    except OSError as exc:
        return _fail(f"cannot write {exc.filename}: {exc.strerror}")
    checked = "not checked" if args.no_check else "accepted by the broker"
    sys.stdout.write(f"gateway {args.gateway_id} enrolled ({checked}); credentials in {args.credentials_file}\n")
    if args.config is not None:
        sys.stdout.write(f"{'created' if created else 'kept existing'} {args.config}\n")
    return 0


def write_credentials(path: Path, username: str, secret: str) -> None:
    """The gateway's credentials file, mode 0600, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"username = {_toml_str(username)}\npassword = {_toml_str(secret)}\n")
    os.replace(tmp, path)


def write_config_if_missing(
    path: Path, gateway_id: str, broker_url: str, ca_file: Path | None, credentials_file: Path
) -> bool:
    """Create a minimal gateway config; an existing one is left alone (it lists devices). True when created."""
    if path.exists():
        return False
    lines = [f"gateway_id = {_toml_str(gateway_id)}", f"broker_url = {_toml_str(broker_url)}"]
    if ca_file is not None:
        lines.append(f"ca_file = {_toml_str(str(ca_file))}")
    lines.append(f"credentials_file = {_toml_str(str(credentials_file))}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return True


def check_credentials(broker_url: str, username: str, secret: str, ca_file: Path | None, timeout: float) -> str | None:
    """Connect once (MQTT v5); None when accepted, else the reason."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    url = urlsplit(broker_url)
    tls = url.scheme == "mqtts"
    result: queue.Queue[int] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{username}-enroll-check", protocol=mqtt.MQTTv5)
    client.username_pw_set(username, secret)
    if tls:
        client.tls_set_context(ssl.create_default_context(cafile=str(ca_file) if ca_file else None))
    client.on_connect = lambda _c, _u, _f, rc, _p: result.put(int(rc.value))
    try:
        client.connect(url.hostname or "", url.port or (8883 if tls else 1883), keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        return f"cannot reach {url.hostname}: {exc}"
    client.loop_start()
    try:
        code = result.get(timeout=timeout)
    except queue.Empty:
        return "no answer from the broker"
    finally:
        client.disconnect()
        client.loop_stop()
    return None if code == 0 else _REASONS.get(code, f"CONNACK reason {code}")
