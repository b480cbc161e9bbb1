from __future__ import annotations

from pathlib import Path

import pytest

from agent import DEFAULT_ALLOWED_ACTIONS, AgentConfigError, AgentSettings, BrokerSettings, load_settings

GOOD = """
device_id = "printer-0042"
server_key_file = "keys/signing.pub"
data_dir = "/var/lib/fleetcare-agent"
site = "Hospital North"

[broker]
host = "broker.example.com"

[tls]
ca_file = "pki/ca.crt"
cert_file = "pki/device.crt"
key_file = "pki/device.key"

[policy]
log_paths = ["/var/log/printer"]

[[plugins]]
name = "acme-printer"
options = { address = "10.0.0.5" }
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> AgentConfigError:
    with pytest.raises(AgentConfigError) as info:
        load_settings(_write(tmp_path, text))
    return info.value


def test_config_loads_toml_with_defaults_and_relative_paths(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, GOOD))
    assert settings.device_id == "printer-0042"
    assert settings.broker.port == 8883
    assert settings.broker.keepalive == 30
    assert settings.telemetry_interval == 10
    assert settings.outbox_max_messages == 10_000
    assert settings.policy.allowed_actions == list(DEFAULT_ALLOWED_ACTIONS)
    assert settings.reconnect.initial == 1
    assert settings.reconnect.max == 60
    assert settings.tls is not None
    assert settings.tls.ca_file == tmp_path.resolve() / "pki/ca.crt"
    assert settings.server_key_file == tmp_path.resolve() / "keys/signing.pub"
    assert settings.data_dir == Path("/var/lib/fleetcare-agent")
    assert settings.plugins[0].options == {"address": "10.0.0.5"}


def test_config_can_be_built_in_code(tmp_path: Path) -> None:
    settings = AgentSettings(
        device_id="sim-0001",
        broker=BrokerSettings(host="localhost", port=1883, allow_plaintext=True),
        server_key_file=tmp_path / "signing.pub",
        data_dir=tmp_path / "sim-0001",
        collect_system_metrics=False,
    )
    assert settings.tls is None
    assert settings.data_dir == tmp_path / "sim-0001"


def test_config_error_names_a_bad_port(tmp_path: Path) -> None:
    error = _error(tmp_path, GOOD.replace('host = "broker.example.com"', 'host = "b"\nport = 70000'))
    assert error.field == "broker.port"
    assert "broker.port" in str(error)
    assert str(tmp_path) in str(error)


def test_config_error_names_a_missing_field(tmp_path: Path) -> None:
    error = _error(tmp_path, GOOD.replace('device_id = "printer-0042"', ""))
    assert error.field == "device_id"
    assert "Field required" in str(error)


def test_config_error_names_an_unsafe_device_id(tmp_path: Path) -> None:
    error = _error(tmp_path, GOOD.replace("printer-0042", "printer/+/#"))
    assert error.field == "device_id"
    assert "'/'" in str(error)


def test_config_error_names_an_unknown_key(tmp_path: Path) -> None:
    error = _error(tmp_path, GOOD.replace("[policy]", "[policy]\nallowed_action = ['ping']"))
    assert error.field == "policy.allowed_action"


def test_config_refuses_missing_tls_unless_plaintext_explicitly_allowed(tmp_path: Path) -> None:
    text = GOOD.split("[tls]", maxsplit=1)[0] + "[policy]\n"
    error = _error(tmp_path, text)
    assert "tls is required" in str(error)
    settings = load_settings(
        _write(tmp_path, text.replace("[broker]\n", "[broker]\nallow_plaintext = true\n"))
    )
    assert settings.tls is None


def test_config_error_names_reconnect_bounds(tmp_path: Path) -> None:
    error = _error(tmp_path, GOOD + "\n[reconnect]\ninitial = 10\nmax = 5\n")
    assert error.field == "reconnect"
    assert "max" in str(error)


def test_config_error_lists_every_problem(tmp_path: Path) -> None:
    error = _error(
        tmp_path, GOOD.replace('site = "Hospital North"', "telemetry_interval = -1\noutbox_max_messages = 1")
    )
    assert {field for field, _ in error.errors} == {"telemetry_interval", "outbox_max_messages"}


def test_config_reports_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(AgentConfigError, match="not valid TOML"):
        load_settings(_write(tmp_path, "device_id = "))
