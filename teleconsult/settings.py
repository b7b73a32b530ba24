"""Server settings: ``TBIB_*`` environment variables over an optional TOML file over defaults.

Build them in ``main()`` or a test with :func:`load_settings` (never at import time) and pass them down explicitly.
Priority, highest first: keyword overrides, environment (``TBIB_DATABASE_URL`` ...), the TOML file (``--config`` or
``TBIB_CONFIG``), defaults. Lists and tables in the environment are JSON (``TBIB_CORS_ORIGINS='["https://a.example"]'``).

Features that need their own settings read a table of :attr:`Settings.ext` (TOML ``[ext.alerts]``, or
``TBIB_EXT='{"alerts": {...}}'``) and validate it with their own pydantic model, so this file stays small.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from teleconsult.errors import ConfigError

#: The development default; refused when ``env`` is not "development".
DEFAULT_SECRET: Final = "dev-insecure-change-me"  # noqa: S105 - documented development default, refused elsewhere
MIN_SECRET_LENGTH: Final = 32


class Settings(BaseSettings):
    """Every knob of ``tbib server`` (and of the CLI commands that talk to the database or the broker)."""

    model_config = SettingsConfigDict(env_prefix="TBIB_", extra="ignore", frozen=True)

    env: Literal["development", "production", "test"] = "development"
    """Outside "development" a real ``secret_key`` (>= 32 characters, not the default) is required."""

    database_url: str = "postgresql://localhost/tbib"
    """libpq connection string or URL of the PostgreSQL/TimescaleDB database."""
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    """Broker used by the server's own MQTT clients (ingest, commands to gateways)."""

    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    """Signs access tokens and CSRF tokens. Rotate it to log everybody out."""

    access_token_ttl_s: int = Field(default=300, ge=5)
    refresh_token_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    jwt_issuer: str = "tbib"

    cookie_name: str = "tbib_session"
    """HttpOnly cookie holding the browser's access token (SameSite=Strict)."""
    refresh_cookie_name: str = "tbib_refresh"
    """HttpOnly cookie holding the browser's refresh token, sent only to the auth routes."""
    csrf_cookie_name: str = "tbib_csrf"
    """Readable cookie with the CSRF token the dashboard echoes in ``X-CSRF-Token``."""
    cookie_secure: bool = True
    """Set the Secure flag on cookies. Only turn off for plain-http local development."""

    lockout_threshold: int = Field(default=5, ge=1)
    """Failed logins of one account within ``lockout_window_s`` that lock it."""
    lockout_window_s: int = Field(default=900, ge=1)
    lockout_duration_s: int = Field(default=900, ge=1)
    ip_failure_limit: int = Field(default=50, ge=1)
    """Failed logins from one client address within ``lockout_window_s`` before that address is refused."""
    totp_issuer: str = "tbib"

    cors_origins: list[str] = []
    """Origins allowed to call the API from a browser. Empty (the default): CORS closed."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """With both set, ``tbib server`` serves HTTPS and sends HSTS."""
    forwarded_allow_ips: str = "127.0.0.1"
    """Proxies trusted for X-Forwarded-For/Proto (uvicorn ``forwarded_allow_ips``)."""

    turn_secret: SecretStr | None = None
    """coturn ``static-auth-secret`` for TURN REST credentials (signaling)."""
    turn_urls: list[str] = []
    stun_urls: list[str] = []

    mosquitto_passwd_file: Path | None = None
    """Mosquitto ``password_file`` that gateway enrolment rewrites."""
    mosquitto_acl_file: Path | None = None
    """Mosquitto ``acl_file`` that gateway enrolment rewrites."""
    mosquitto_pid_file: Path | None = None
    """PID file of the broker; it gets SIGHUP after each rewrite so revocation needs no restart."""

    ext: dict[str, dict[str, Any]] = {}
    """Per-feature settings tables (``[ext.<feature>]``), validated by each feature."""

    @model_validator(mode="after")
    def _check_secret(self) -> Settings:
        secret = self.secret_key.get_secret_value()
        if self.env != "development" and (secret == DEFAULT_SECRET or len(secret) < MIN_SECRET_LENGTH):
            raise ValueError(
                f"TBIB_SECRET_KEY must be set to a random value of at least {MIN_SECRET_LENGTH} characters "
                f'when env is "{self.env}" (e.g. `python -c "import secrets; print(secrets.token_urlsafe(48))"`)'
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        return self

    @property
    def tls_enabled(self) -> bool:
        """True when the server terminates TLS itself."""
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def uses_default_secret(self) -> bool:
        """True with the development default secret (callers log a warning)."""
        return self.secret_key.get_secret_value() == DEFAULT_SECRET


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings; raises :class:`ConfigError` (one readable line) when they are invalid."""
    path = config_file if config_file is not None else os.environ.get("TBIB_CONFIG")
    try:
        if path is None:
            return Settings(**overrides)
        toml_path = Path(path)
        if not toml_path.is_file():
            raise ConfigError(f"config file {toml_path} does not exist")
        return _from_toml(toml_path, overrides)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ConfigError(_one_line(exc)) from exc


def _from_toml(toml_path: Path, overrides: dict[str, Any]) -> Settings:
    class _FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=toml_path)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    loaded = _FileSettings(**overrides)
    return Settings.model_validate(loaded.model_dump())


def _one_line(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for err in errors():
            loc = ".".join(str(x) for x in err.get("loc", ())) or "settings"
            parts.append(f"{loc}: {err.get('msg', '')}")
        return "invalid settings: " + "; ".join(parts)
    return str(exc)
