"""The `fleetcare certs` Typer app, driven through CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from certs import PkiDir, revoked_serials
from certs.cli import app

runner = CliRunner()


def test_init_device_revoke_broker_config(tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    result = runner.invoke(app, ["init", "--dir", str(pki_dir), "--host", "mqtt.example.com"])
    assert result.exit_code == 0, result.output
    pki = PkiDir(pki_dir)
    assert pki.ca_key.exists()

    result = runner.invoke(app, ["device", "printer-7", "--dir", str(pki_dir), "--days", "10"])
    assert result.exit_code == 0, result.output
    assert str(pki.device_cert("printer-7")) in result.output

    result = runner.invoke(app, ["revoke", "printer-7", "--dir", str(pki_dir)])
    assert result.exit_code == 0, result.output
    assert len(revoked_serials(pki)) == 1

    out = tmp_path / "mosq"
    result = runner.invoke(app, ["broker-config", "--dir", str(pki_dir), "--out", str(out), "--port", "9883"])
    assert result.exit_code == 0, result.output
    assert "listener 9883 127.0.0.1" in (out / "mosquitto.conf").read_text()
    assert (out / "acl").exists()


def test_dir_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETCARE_PKI_DIR", str(tmp_path / "from-env"))
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-env" / "ca.crt").exists()


def test_dir_defaults_to_pki_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEETCARE_PKI_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pki" / "ca.crt").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["device", "bad/id"], "invalid device id 'bad/id'"),
        (["device", "new-one"], "not found"),
        (["revoke", "ghost"], "not found"),
        (["broker-config"], "not found"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--dir", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_reinit_without_force_is_refused(tmp_path: Path) -> None:
    pki_dir = str(tmp_path / "pki")
    assert runner.invoke(app, ["init", "--dir", pki_dir]).exit_code == 0
    result = runner.invoke(app, ["init", "--dir", pki_dir])
    assert result.exit_code == 2
    assert "--force" in result.output
    assert runner.invoke(app, ["init", "--dir", pki_dir, "--force"]).exit_code == 0


def test_file_system_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = runner.invoke(app, ["init", "--dir", str(blocker / "pki")])
    assert result.exit_code == 2
    assert result.output.startswith("error: ")
    assert "Traceback" not in result.output
