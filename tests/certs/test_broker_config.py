"""write_mosquitto_config and the ACL file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from certs import PkiDir, PkiError, acl_text, init_pki, write_mosquitto_config

REPO = Path(__file__).resolve().parents[2]


def options(conf: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in conf.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition(" ")
            pairs.append((key, value))
    return pairs


def acl_rules(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_config_has_one_mutual_tls_listener(pki: PkiDir, tmp_path: Path) -> None:
    conf = write_mosquitto_config(pki, tmp_path / "m", port=18883, bind="0.0.0.0")
    assert conf == tmp_path / "m" / "mosquitto.conf"
    opts = options(conf)
    single = dict(opts)
    assert [v for k, v in opts if k == "listener"] == ["18883 0.0.0.0"]
    assert single["cafile"] == str(pki.ca_cert.absolute())
    assert single["certfile"] == str(pki.broker_cert.absolute())
    assert single["keyfile"] == str(pki.broker_key.absolute())
    assert single["crlfile"] == str(pki.crl.absolute())
    assert single["require_certificate"] == "true"
    assert single["use_identity_as_username"] == "true"
    assert single["allow_anonymous"] == "false"
    assert single["per_listener_settings"] == "false"
    assert single["tls_version"] == "tlsv1.2"
    assert single["acl_file"] == str((tmp_path / "m" / "acl").absolute())
    assert single["persistence"] == "false"
    assert single["max_queued_messages"] == "100000"
    assert single["log_dest"] == "stderr"


def test_persistence_dir_and_user(pki: PkiDir, tmp_path: Path) -> None:
    data = tmp_path / "data"
    conf = write_mosquitto_config(pki, tmp_path / "m", persistence_dir=data, run_as_user="mosquitto")
    single = dict(options(conf))
    assert single["persistence"] == "true"
    assert single["persistence_location"] == f"{data.absolute()}/"
    assert single["user"] == "mosquitto"
    assert data.is_dir()


def test_user_defaults_to_root_when_running_as_root(pki: PkiDir, tmp_path: Path) -> None:
    single = dict(options(write_mosquitto_config(pki, tmp_path / "m")))
    if os.geteuid() == 0:
        assert single["user"] == "root"
    else:
        assert "user" not in single


def test_acl_file_is_the_fleet_acl(tmp_path: Path) -> None:
    conf = write_mosquitto_config(init_pki(tmp_path / "pki"), tmp_path / "m")
    assert acl_rules(conf.with_name("acl").read_text()) == [
        "user fleetcare-server",
        "topic read fc/v1/d/+/up/#",
        "topic write fc/v1/d/+/down/#",
        "pattern write fc/v1/d/%u/up/#",
        "pattern read fc/v1/d/%u/down/#",
    ]


def test_deploy_acl_example_matches_the_generated_acl() -> None:
    deployed = (REPO / "deploy" / "mosquitto" / "acl").read_text()
    assert acl_rules(deployed) == acl_rules(acl_text())


def test_paths_with_spaces_are_refused(pki: PkiDir, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="whitespace"):
        write_mosquitto_config(pki, tmp_path / "has space")


def test_bad_port_is_refused(pki: PkiDir, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="port"):
        write_mosquitto_config(pki, tmp_path / "m", port=70000)


SECURITY_DIRECTIVES = (
    "allow_anonymous false",
    "require_certificate true",
    "use_identity_as_username true",
    "use_username_as_clientid true",
)


def test_deploy_config_example_binds_identity_like_the_generated_one(pki: PkiDir, tmp_path: Path) -> None:
    """The production example must not lag the generated config on the identity directives
    (issue 13: without use_username_as_clientid any certificate can take over a client id)."""
    generated = write_mosquitto_config(pki, tmp_path / "m").read_text().splitlines()
    deployed = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    for directive in SECURITY_DIRECTIVES:
        assert directive in generated
        assert directive in deployed, f"deploy/mosquitto/mosquitto.conf lacks {directive!r}"
    assert any(line.startswith("pid_file ") for line in deployed)
