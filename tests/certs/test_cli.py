"""The `fleetcare certs` Typer app, driven through CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from certs import PkiDir, read_denied, revoked_serials
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


def test_revoke_denies_the_identity_in_the_broker_acl_and_says_the_broker_was_not_reloaded(
    tmp_path: Path,
) -> None:
    pki_dir = str(tmp_path / "pki")
    for args in (["init"], ["device", "printer-7"], ["device", "printer-8"], ["broker-config"]):
        assert runner.invoke(app, [*args, "--dir", pki_dir]).exit_code == 0
    result = runner.invoke(app, ["revoke", "printer-7", "--dir", pki_dir])
    assert result.exit_code == 0, result.output
    assert "now denies printer-7" in result.output
    assert "broker not reloaded" in result.output  # no broker running: said, with what to do
    assert "reload the broker yourself" in result.output
    assert [e.identity for e in read_denied(PkiDir(Path(pki_dir)).broker_dir / "acl")] == ["printer-7"]


def test_revoke_without_an_acl_warns_that_live_connections_stay(tmp_path: Path) -> None:
    pki_dir = str(tmp_path / "pki")
    for args in (["init"], ["device", "printer-7"]):
        assert runner.invoke(app, [*args, "--dir", pki_dir]).exit_code == 0
    result = runner.invoke(app, ["revoke", "printer-7", "--dir", pki_dir])
    assert result.exit_code == 0
    assert "keep their rights until the broker restarts" in result.output


def test_server_issues_a_named_identity_granted_in_the_acl(tmp_path: Path) -> None:
    pki_dir = str(tmp_path / "pki")
    for args in (["init"], ["broker-config"]):
        assert runner.invoke(app, [*args, "--dir", pki_dir]).exit_code == 0
    result = runner.invoke(app, ["server", "ingest-2", "--dir", pki_dir])
    assert result.exit_code == 0, result.output
    assert "identity    fleetcare-server-ingest-2" in result.output
    acl = (PkiDir(Path(pki_dir)).broker_dir / "acl").read_text()
    assert "user fleetcare-server-ingest-2\ntopic read fc/v1/d/+/up/#" in acl
    refused = runner.invoke(app, ["device", "fleetcare-server-x", "--dir", pki_dir])
    assert refused.exit_code == 2
    assert "reserved" in refused.output


def test_renew_signs_a_csr_into_the_out_file(tmp_path: Path) -> None:
    from tests.certs.test_renewal import csr_for  # noqa: PLC0415

    pki_dir = str(tmp_path / "pki")
    for args in (["init"], ["device", "printer-7"]):
        assert runner.invoke(app, [*args, "--dir", pki_dir]).exit_code == 0
    csr = tmp_path / "printer-7.csr"
    csr.write_bytes(csr_for("printer-7"))
    out = tmp_path / "printer-7.new.crt"
    result = runner.invoke(
        app, ["renew", str(csr), "--out", str(out), "--device", "printer-7", "--dir", pki_dir]
    )
    assert result.exit_code == 0, result.output
    assert "renewed printer-7" in result.output
    assert out.exists()
    again = runner.invoke(app, ["renew", str(csr), "--out", str(out), "--dir", pki_dir])
    assert again.exit_code == 2
    assert "--overwrite" in again.output
