"""Settings: env over TOML over defaults; refuse default secrets outside development."""

from __future__ import annotations

from pathlib import Path

import pytest

from teleconsult.errors import ConfigError
from teleconsult.settings import DEFAULT_SECRET, load_settings


def test_development_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TBIB_CONFIG", raising=False)
    s = load_settings()
    assert s.env == "development"
    assert s.uses_default_secret
    assert s.cors_origins == []
    assert not s.tls_enabled


@pytest.mark.parametrize("env", ["production", "test"])
def test_default_or_short_secret_refused_outside_development(env: str) -> None:
    with pytest.raises(ConfigError, match="TBIB_SECRET_KEY"):
        load_settings(env=env)
    with pytest.raises(ConfigError, match="TBIB_SECRET_KEY"):
        load_settings(env=env, secret_key=DEFAULT_SECRET)
    with pytest.raises(ConfigError, match="TBIB_SECRET_KEY"):
        load_settings(env=env, secret_key="short")
    assert load_settings(env=env, secret_key="k" * 32).env == env


def test_env_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "tbib.toml"
    cfg.write_text(
        'env = "production"\nsecret_key = "' + "t" * 40 + '"\ndatabase_url = "postgresql://file/db"\n'
        'cors_origins = ["https://a.example"]\n[ext.alerts]\nthreshold = 3\n'
    )
    s = load_settings(cfg)
    assert (s.env, s.database_url, s.cors_origins, s.ext) == (
        "production", "postgresql://file/db", ["https://a.example"], {"alerts": {"threshold": 3}},
    )  # fmt: skip
    monkeypatch.setenv("TBIB_DATABASE_URL", "postgresql://env/db")
    monkeypatch.setenv("TBIB_CONFIG", str(cfg))
    assert load_settings().database_url == "postgresql://env/db"
    assert load_settings(database_url="postgresql://kw/db").database_url == "postgresql://kw/db"


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="tls"):
        load_settings(tls_cert=tmp_path / "c.pem")
    with pytest.raises(ConfigError, match="port"):
        load_settings(port=70000)
