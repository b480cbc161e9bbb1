from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.outbox import Outbox
from certs import PkiDir, issue_device_cert
from protocol import Event, UpKind

runner = CliRunner()


def _config(tmp_path: Path, pki: PkiDir, device_id: str, *, cert: Path, key: Path, extra: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
device_id = "{device_id}"
server_key_file = "{pki.signing_pub}"
data_dir = "{tmp_path / "data"}"
{extra}
[broker]
host = "localhost"

[tls]
ca_file = "{pki.ca_cert}"
cert_file = "{cert}"
key_file = "{key}"
"""
    )
    return path


@pytest.fixture
def device(pki: PkiDir, tmp_path: Path) -> tuple[str, Path, Path]:
    device_id = f"cli-{tmp_path.name[-20:].strip('_')}".replace("_", "-")[:60]
    cert, key = issue_device_cert(pki, device_id, overwrite=True)
    return device_id, cert, key


def test_cli_check_config_accepts_a_good_configuration(
    tmp_path: Path, pki: PkiDir, device: tuple[str, Path, Path]
) -> None:
    device_id, cert, key = device
    result = runner.invoke(
        app, ["check-config", "--config", str(_config(tmp_path, pki, device_id, cert=cert, key=key))]
    )
    assert result.exit_code == 0, result.output
    assert "ok: " in result.output
    assert device_id in result.output


def test_cli_check_config_reports_each_problem_with_a_fix(
    tmp_path: Path, pki: PkiDir, device: tuple[str, Path, Path]
) -> None:
    _, cert, key = device
    loose_key = tmp_path / "loose.key"
    shutil.copy(key, loose_key)
    loose_key.chmod(0o644)
    bad_pub = tmp_path / "bad.pub"
    bad_pub.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    config = _config(tmp_path, pki, "someone-else", cert=cert, key=loose_key)
    config.write_text(config.read_text().replace(str(pki.signing_pub), str(bad_pub)))
    result = runner.invoke(app, ["check-config", "--config", str(config)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert any(line.startswith("tls.cert_file: certificate CN is") and "fix:" in line for line in lines)
    assert any(line.startswith("tls.key_file:") and "chmod 600" in line for line in lines)
    assert any(line.startswith("server_key_file:") for line in lines)


def test_cli_check_config_reports_missing_files(tmp_path: Path, pki: PkiDir) -> None:
    config = _config(tmp_path, pki, "dev-x", cert=tmp_path / "none.crt", key=tmp_path / "none.key")
    result = runner.invoke(app, ["check-config", "--config", str(config)])
    assert result.exit_code == 1
    assert "tls.cert_file:" in result.output
    assert "does not exist" in result.output
    assert "tls.key_file:" in result.output


def test_cli_invalid_config_exits_2_naming_the_field(tmp_path: Path, pki: PkiDir) -> None:
    config = _config(
        tmp_path, pki, "dev-x", cert=tmp_path / "c", key=tmp_path / "k", extra="telemetry_interval = 0"
    )
    for command in ("check-config", "outbox", "run"):
        result = runner.invoke(app, [command, "--config", str(config)])
        assert result.exit_code == 2
        assert "telemetry_interval" in result.output


def test_cli_outbox_shows_depth_oldest_and_dropped(
    tmp_path: Path, pki: PkiDir, server_key_file: Path
) -> None:
    config = _config(tmp_path, pki, "dev-x", cert=tmp_path / "c", key=tmp_path / "k")
    result = runner.invoke(app, ["outbox", "--config", str(config)])
    assert result.exit_code == 0
    assert "no outbox yet" in result.output

    (tmp_path / "data").mkdir()
    box = Outbox(tmp_path / "data" / "agent.sqlite3", "dev-x", max_messages=10)
    for _ in range(3):
        box.append(
            UpKind.EVENT,
            lambda seq: Event(
                device_id="dev-x", seq=seq, ts=datetime(2026, 6, 1, tzinfo=UTC), event="fault.raised"
            ),
        )
    result = runner.invoke(app, ["outbox", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "depth:             3" in result.output
    assert "seq 0 (event)" in result.output
    assert "dropped telemetry: 0" in result.output
    assert "last receipt:      never" in result.output

    box.confirm([(0, 0)])  # the server confirms; the next PUBACK leaves a message unconfirmed
    box.ack(1)
    box.close()
    result = runner.invoke(app, ["outbox", "--config", str(config)])
    assert "depth:             1" in result.output
    assert "unconfirmed:       1 (sent, waiting for the server's receipt)" in result.output
    assert "last receipt:      never" not in result.output


def test_cli_check_config_only_warns_about_missing_log_paths(
    tmp_path: Path, pki: PkiDir, device: tuple[str, Path, Path]
) -> None:
    device_id, cert, key = device
    config = _config(tmp_path, pki, device_id, cert=cert, key=key)
    config.write_text(config.read_text() + f'\n[policy]\nlog_paths = ["{tmp_path / "not-yet"}"]\n')
    result = runner.invoke(app, ["check-config", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "warning: policy.log_paths.0:" in result.output
