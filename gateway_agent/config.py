"""Gateway configuration: a TOML file plus ``TBIB_GATEWAY_*`` environment variables (pydantic-settings).

Precedence: environment over file over defaults. Nested settings use ``__`` in env names
(``TBIB_GATEWAY_BATCHING__MAX_READINGS=100``); the device list can be given as JSON (``TBIB_GATEWAY_DEVICES='[...]'``).

Secrets never live in the TOML file: the broker user name and password come from ``credentials_file`` (a small TOML file
with ``username`` and ``password``, not readable by others). :func:`load_config` turns every problem into one
:class:`~gateway_agent.errors.ConfigError` that names the field and, when it can, the line of the file.

Example::

    gateway_id = "gw-0001"
    broker_url = "mqtts://broker.example.org:8883"
    ca_file = "/etc/tbib-gateway/ca.pem"
    credentials_file = "/etc/tbib-gateway/credentials.toml"

    [[devices]]
    address = "C0:FF:EE:00:00:01"
    device_id = "dev-bp-0001"
    kind = "blood_pressure"
    model = "Acme BP-100"
"""

from __future__ import annotations

import enum
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from gateway_agent.errors import ConfigError

ENV_PREFIX: Final = "TBIB_GATEWAY_"
DEFAULT_CONFIG_PATH: Final = Path("/etc/tbib-gateway/gateway.toml")
_ADDRESS_RE: Final = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
_GATEWAY_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # no MQTT wildcards or separators in the topic segment


class DeviceKind(enum.StrEnum):
    """What an enrolled device measures; decides the GATT service and whether it is a spot-check device."""

    HEART_RATE = "heart_rate"
    BLOOD_PRESSURE = "blood_pressure"
    THERMOMETER = "thermometer"
    PULSE_OXIMETER = "pulse_oximeter"
    WEIGHT_SCALE = "weight_scale"
    GLUCOSE_METER = "glucose_meter"
    CGM = "cgm"


class DeviceEntry(BaseModel):
    """One enrolled device (allowlist entry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    device_id: str = Field(min_length=1, max_length=128)
    kind: DeviceKind
    model: str = ""
    serial: str = ""
    idle_disconnect_s: float | None = Field(default=None, gt=0)
    """Spot-check devices are disconnected after this many idle seconds (default: 10 s for spot-check kinds, never for
    continuous ones)."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip().upper().replace("-", ":")
        if not _ADDRESS_RE.match(value):
            raise ValueError("must be a Bluetooth address like C0:FF:EE:00:00:01")
        return value


class Batching(BaseModel):
    """A batch leaves at ``max_readings`` readings or ``max_delay_ms`` after its oldest reading."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_readings: int = Field(default=100, ge=1, le=5000)
    max_delay_ms: int = Field(default=200, ge=0, le=600_000)
    inflight_window: int = Field(default=20, ge=1, le=1000)
    """Batches published and not yet acknowledged (PUBACK) at most."""


class OutboxSettings(BaseModel):
    """The durable queue of readings not yet acknowledged by the broker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path = Path("/var/lib/tbib-gateway/outbox.sqlite3")
    max_readings: int = Field(default=1_000_000, ge=10)
    """When full, the oldest readings are dropped (counted, and an ``outbox_overflow`` event is published)."""
    capture_log: Path | None = None
    """Append the id of every captured reading to this file once stored (tests and the chaos suite count from it)."""


class ReceiptSettings(BaseModel):
    """Commit receipts from the server (``docs/mqtt.md``): a reading leaves the outbox when the database has it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """False: behave as a gateway older than receipts (delete on PUBACK, batches carry no name)."""
    timeout_s: float = Field(default=30.0, gt=0, le=86_400)
    """A batch without receipt this long after its PUBACK is re-sent (same ids)."""
    fallback_after: int = Field(default=5, ge=0)
    """After this many timeouts without any receipt on a connection, assume an old server: PUBACK mode (0 = never)."""


class CommandSettings(BaseModel):
    """``[commands]``: signed commands from the server (``docs/mqtt.md``), e.g. join a teleconsultation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """Subscribe to ``tbib/v1/gw/{id}/commands`` (False: the gateway never joins calls by itself)."""
    server_keys: tuple[str, ...] = ()
    """The server's Ed25519 public keys (base64url, ``GET /api/v1/calls/command-key``); none: every command is refused
    (``unknown-key``, reported to the doctor)."""
    max_lifetime_s: float = Field(default=120.0, gt=0, le=3600)
    skew_s: float = Field(default=30.0, ge=0, le=600)
    state_file: Path | None = None
    """Where the ids of accepted commands are remembered across restarts (replay protection)."""
    camera: str | None = "/dev/video0"
    """V4L2 camera for calls (a test pattern when absent)."""
    microphone: str | None = None

    @field_validator("server_keys")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from gateway_agent.commands import parse_public_key

        for key in value:
            parse_public_key(key)  # ValueError names the problem
        return value


class Credentials(BaseModel):
    """Broker user name and password, read from ``credentials_file``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(min_length=1)
    password: str = Field(min_length=1, repr=False)


def _check_broker_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError("has no host name")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials: put them in credentials_file")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"has a bad port: {exc}") from None
    return value


class GatewaySettings(BaseSettings):
    """Every setting of the gateway process."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True)

    gateway_id: str
    broker_url: str = "mqtt://127.0.0.1:1883"
    broker_urls: tuple[str, ...] = ()
    """More nodes of the same broker cluster (same scheme as ``broker_url``): after a failed connect or a lost link the
    publisher tries the next one, round robin (docs/scale-out.md)."""
    mqtt_version: Literal["5", "3.1.1"] = "5"
    """MQTT 3.1.1 for brokers without MQTT 5 (RabbitMQ 3.10's ``rabbitmq_mqtt``, NATS 2.9)."""
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    credentials_file: Path | None = None
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    status_file: Path | None = Path("/run/tbib-gateway/status.json")
    devices: tuple[DeviceEntry, ...] = ()
    batching: Batching = Batching()
    outbox: OutboxSettings = OutboxSettings()
    receipts: ReceiptSettings = ReceiptSettings()
    commands: CommandSettings = CommandSettings()
    stop_flush_s: float = Field(default=3.0, ge=0, le=3600)
    """At a clean stop, seconds to wait for what is still in the outbox to be receipted (the rest is sent next run)."""

    @field_validator("gateway_id")
    @classmethod
    def _gateway_id(cls, value: str) -> str:
        if not _GATEWAY_ID_RE.match(value):
            raise ValueError("must be 1-64 characters among letters, digits, '-', '_' and '.'")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        return _check_broker_url(value)

    @field_validator("broker_urls")
    @classmethod
    def _broker_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_broker_url(v) for v in value)

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySettings:
        if any(urlsplit(u).scheme != urlsplit(self.broker_url).scheme for u in self.broker_urls):
            raise ValueError("broker_urls must use the scheme of broker_url (all mqtt:// or all mqtts://)")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        if self.client_cert is not None and not self.tls:
            raise ValueError("a client certificate needs an mqtts:// broker_url")
        seen: set[str] = set()
        for device in self.devices:
            if device.address in seen:
                raise ValueError(f"device {device.address} is enrolled twice")
            seen.add(device.address)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then what :func:`load_config` read from the file (passed as init arguments)."""
        return (env_settings, init_settings)

    @property
    def tls(self) -> bool:
        """Whether the broker URL asks for TLS."""
        return urlsplit(self.broker_url).scheme == "mqtts"

    @property
    def broker_host(self) -> str:
        """Host name of the broker."""
        host = urlsplit(self.broker_url).hostname
        assert host is not None  # checked by the validator
        return host

    @property
    def broker_port(self) -> int:
        """Port of the broker (1883 for mqtt://, 8883 for mqtts:// when absent)."""
        return urlsplit(self.broker_url).port or (8883 if self.tls else 1883)

    @property
    def broker_fallbacks(self) -> tuple[tuple[str, int], ...]:
        """(host, port) of every ``broker_urls`` entry."""
        default = 8883 if self.tls else 1883
        return tuple((urlsplit(u).hostname or "", urlsplit(u).port or default) for u in self.broker_urls)

    def device(self, address: str) -> DeviceEntry | None:
        """The enrolled device with this address, if any."""
        address = address.upper()
        return next((d for d in self.devices if d.address == address), None)

    def credentials(self) -> Credentials | None:
        """The broker credentials from ``credentials_file`` (``None`` when no file is configured)."""
        if self.credentials_file is None:
            return None
        return read_credentials(self.credentials_file)


@dataclass(frozen=True, slots=True)
class _Source:
    path: Path | None
    text: str


def read_credentials(path: Path) -> Credentials:
    """Read and check a credentials file (``username`` and ``password``, mode 0600 or stricter)."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"credentials_file {path}: {exc.strerror}"
        raise ConfigError(msg, field="credentials_file", source=str(path)) from None
    if st.st_mode & stat.S_IROTH:
        raise ConfigError(
            f"credentials_file {path} is readable by everyone: chmod 600 it",
            field="credentials_file",
            source=str(path),
        )
    try:
        data = tomllib.loads(text)
        return Credentials.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"credentials_file {path}: {exc}", field="credentials_file", source=str(path)) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "file"
        raise ConfigError(
            f"credentials_file {path}: {name}: {err['msg']}", field="credentials_file", source=str(path)
        ) from None


def load_config(path: Path | str | None = None, *, overrides: dict[str, Any] | None = None) -> GatewaySettings:
    """Load a TOML file (optional) and ``TBIB_GATEWAY_*`` env; raise one :class:`ConfigError` when bad.

    ``overrides`` (command-line options, nested dicts allowed) win over the environment, which wins over the file.
    """
    source = _Source(None, "")
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}", source=str(path)) from None
        source = _Source(path, text)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}", source=str(path)) from None
        for secret in ("password", "username"):
            if secret in data:
                line = _line_of(source.text, (secret,))
                where = f"{path}:{line}" if line else str(path)
                raise ConfigError(
                    f"{where}: {secret} must not be in the config file; put it in credentials_file (mode 0600)",
                    field=secret,
                    source=str(path),
                )
    return _build(data, source, overrides or {})


def _build(data: dict[str, Any], source: _Source, overrides: dict[str, Any]) -> GatewaySettings:
    class _Layered(GatewaySettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                InitSettingsSource(settings_cls, overrides),
                env_settings,
                InitSettingsSource(settings_cls, data),
            )

    try:
        return _Layered()
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        field = _dotted(loc, data)
        line = _line_of(source.text, loc) if source.path else None
        where = f"{source.path}:{line}: " if line else (f"{source.path}: " if source.path else "")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}{field or 'settings'}: {msg}{more}", field=field, source=str(source.path)) from None


def _dotted(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """``("devices", 1, "kind")`` -> ``devices[1].kind``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Best effort: 1-based line of the key named by ``loc`` in the TOML text (table headers are followed)."""
    if not text:
        return None
    lines = text.splitlines()
    start, table_count = 0, -1
    keys = [p for p in loc if isinstance(p, str)]
    indexes = [p for p in loc if isinstance(p, int)]
    # Walk into the table or array-of-tables named by the first key, when there is one.
    if len(loc) > 1 and isinstance(loc[0], str):
        header = re.compile(rf"^\s*\[\[?\s*{re.escape(loc[0])}\s*\]\]?\s*(#.*)?$")
        wanted = indexes[0] if indexes else 0
        for i, line in enumerate(lines):
            if header.match(line):
                table_count += 1
                if table_count == wanted:
                    start = i
                    break
        else:
            start = 0
        keys = keys[1:] or keys
    key_re = re.compile(rf"^\s*\"?{re.escape(keys[-1])}\"?\s*=") if keys else None
    if key_re is not None:
        for i in range(start, len(lines)):
            if key_re.match(lines[i]):
                return i + 1
    return start + 1 if start else None
