"""Server settings: TOML file, environment on top, broken values refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import ConfigError
from server.settings import load_settings, sync_database_url


def test_toml_file_with_environment_on_top(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        'database_url = "postgresql+psycopg://fc@db/fleet"\n'
        '[mqtt]\nenabled = false\nport = 8884\nshared_group = "workers"\n'
        "[ingest]\nbatch_size = 50\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("FLEETCARE_MQTT__HOST", "broker.example")
    monkeypatch.setenv("FLEETCARE_INGEST__BATCH_INTERVAL", "0.2")
    settings = load_settings(config)
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.shared_group) == (
        "broker.example",
        8884,
        "workers",
    )
    assert (settings.ingest.batch_size, settings.ingest.batch_interval) == (50, 0.2)
    assert settings.sync_database_url == "postgresql+psycopg://fc@db/fleet"
    assert sync_database_url("sqlite+aiosqlite:///./var/x.db") == "sqlite:///./var/x.db"
    monkeypatch.setenv("FLEETCARE_MQTT__SHARED_GROUP", "")
    assert load_settings(config).mqtt.shared_group is None


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"database_url": "mysql://db/x"}, "database_url"),
        ({"mqtt": {"enabled": True}}, "mqtt.ca_file"),
        ({"mqtt": {"enabled": False, "port": 0}}, "mqtt.port"),
        ({"mqtt": {"enabled": False, "shared_group": "a/b"}}, "mqtt.shared_group"),
        ({"mqtt": {"enabled": False}, "ingest": {"batch_size": 0}}, "ingest.batch_size"),
        ({"mqtt": {"enabled": False}, "signing_key_file": "/nonexistent/key.pem"}, "signing_key_file"),
        ({"mqtt": {"enabled": False}, "api": {"port": 70000}}, "api.port"),
        ({"mqtt": {"enabled": False}, "surprise": 1}, "surprise"),
    ],
)
def test_broken_settings_are_refused_naming_the_setting(overrides: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, **overrides)
    assert info.value.setting == setting
    assert str(info.value).startswith(f"setting {setting}: ")


def test_unreadable_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[mqtt\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)
