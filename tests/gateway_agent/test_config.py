"""Gateway configuration: TOML + env, one clear error per bad file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway_agent.config import DeviceKind, load_config, read_credentials
from gateway_agent.errors import ConfigError

GOOD = """\
gateway_id = "gw-0001"
broker_url = "mqtts://broker.example.org"
ca_file = "/etc/tbib-gateway/ca.pem"

[batching]
max_readings = 50
max_delay_ms = 100

[outbox]
path = "/tmp/outbox.sqlite3"
max_readings = 1000

[[devices]]
address = "c0:ff:ee:00:00:01"
device_id = "dev-bp-1"
kind = "blood_pressure"
model = "Acme BP-100"

[[devices]]
address = "C0:FF:EE:00:00:02"
device_id = "dev-hr-1"
kind = "heart_rate"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_good_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.gateway_id == "gw-0001"
    assert cfg.tls
    assert cfg.broker_port == 8883
    assert cfg.batching.max_readings == 50
    assert cfg.outbox.max_readings == 1000
    assert cfg.devices[0].address == "C0:FF:EE:00:00:01"
    assert cfg.devices[1].kind is DeviceKind.HEART_RATE
    assert cfg.device("c0:ff:ee:00:00:02") is cfg.devices[1]
    assert cfg.device("C0:FF:EE:00:00:09") is None


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TBIB_GATEWAY_GATEWAY_ID", "gw-env")
    monkeypatch.setenv("TBIB_GATEWAY_BATCHING__MAX_READINGS", "7")
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.gateway_id == "gw-env"
    assert cfg.batching.max_readings == 7
    assert cfg.batching.max_delay_ms == 100


def test_env_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TBIB_GATEWAY_GATEWAY_ID", "gw-2")
    monkeypatch.setenv(
        "TBIB_GATEWAY_DEVICES", '[{"address": "C0:FF:EE:00:00:03", "device_id": "d3", "kind": "thermometer"}]'
    )
    cfg = load_config(None)
    assert cfg.broker_port == 1883
    assert cfg.devices[0].kind is DeviceKind.THERMOMETER


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace('kind = "heart_rate"', 'kind = "toaster"'), r"toml:22: devices\[1\].kind: Input should"),
        (GOOD.replace("max_delay_ms = 100", "max_delay_ms = -1"), r"gateway.toml:7: batching.max_delay_ms"),
        (GOOD.replace("mqtts://broker", "http://broker"), r"gateway.toml:2: broker_url: must start with mqtt://"),
        (GOOD.replace('"C0:FF:EE:00:00:02"', '"nope"'), r"gateway.toml:20: devices\[1\].address: must be a Bluetooth"),
        (GOOD + "\nfoo = 1\n", r"foo: Extra inputs are not permitted"),
        (GOOD.replace('gateway_id = "gw-0001"', ""), r"gateway_id: Field required"),
        (GOOD.replace('gateway_id = "gw-0001"', 'gateway_id = "gw/+"'), r"gateway_id: must be 1-64"),
        ('gateway_id = "x"\npassword = "hunter2"\n', r"gateway.toml:2: password must not be in the config file"),
        ("gateway_id = \n", r"invalid TOML: .*line 1"),
        (GOOD.replace('"C0:FF:EE:00:00:02"', '"C0:FF:EE:00:00:01"'), r"enrolled twice"),
        ('client_cert = "/c.pem"\n' + GOOD, r"client_cert and client_key go together"),
    ],
)
def test_bad_file_gives_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "nope.toml")


def test_credentials_file(tmp_path: Path) -> None:
    path = tmp_path / "cred.toml"
    path.write_text('username = "gw-1"\npassword = "s3cret"\n')
    os.chmod(path, 0o600)
    creds = read_credentials(path)
    assert (creds.username, creds.password) == ("gw-1", "s3cret")
    assert "s3cret" not in repr(creds)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by everyone"):
        read_credentials(path)
    os.chmod(path, 0o600)
    path.write_text('username = "gw-1"\n')
    with pytest.raises(ConfigError, match="password: Field required"):
        read_credentials(path)


def test_broker_cluster_urls_and_mqtt_version(tmp_path: Path) -> None:
    text = 'broker_urls = ["mqtts://b2.example.org", "mqtts://b3.example.org:9883"]\nmqtt_version = "3.1.1"\n' + GOOD
    cfg = load_config(write(tmp_path, text))
    assert cfg.broker_fallbacks == (("b2.example.org", 8883), ("b3.example.org", 9883))
    assert cfg.mqtt_version == "3.1.1"
    assert load_config(write(tmp_path, GOOD)).broker_fallbacks == ()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('broker_urls = ["mqtt://b2.example.org"]', r"broker_urls must use the scheme of broker_url"),
        ('broker_urls = ["mqtts://u:p@b2.example.org"]', r"gateway.toml:1: broker_urls: must not contain credentials"),
        ('mqtt_version = "4"', r"mqtt_version: Input should be '5' or '3.1.1'"),
    ],
)
def test_bad_broker_cluster_settings(tmp_path: Path, line: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, line + "\n" + GOOD))
