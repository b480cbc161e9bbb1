"""PkiDir layout and the public surface of the certs package."""

from __future__ import annotations

from pathlib import Path

import certs
from certs import PkiDir


def test_public_surface_is_pinned() -> None:
    assert set(certs.__all__) >= {
        "PkiDir",
        "init_pki",
        "issue_device_cert",
        "issue_client_cert",
        "revoke_device",
        "write_mosquitto_config",
        "SERVER_IDENTITY",
        "PkiError",
    }
    for name in certs.__all__:
        assert hasattr(certs, name), name
    assert certs.SERVER_IDENTITY == "fleetcare-server"


def test_pki_dir_paths_are_pure_arithmetic(tmp_path: Path) -> None:
    root = tmp_path / "does-not-exist"
    pki = PkiDir(root)
    assert pki.ca_cert == root / "ca.crt"
    assert pki.ca_key == root / "ca.key"
    assert pki.broker_cert == root / "broker.crt"
    assert pki.broker_key == root / "broker.key"
    assert pki.server_client_cert == root / "server.crt"
    assert pki.server_client_key == root / "server.key"
    assert pki.signing_key == root / "signing.key"
    assert pki.signing_pub == root / "signing.pub"
    assert pki.crl == root / "crl.pem"
    assert pki.device_cert("dev.1") == root / "devices" / "dev.1.crt"
    assert pki.device_key("dev.1") == root / "devices" / "dev.1.key"
    assert not root.exists()


def test_pki_dir_is_frozen_and_hashable(tmp_path: Path) -> None:
    assert PkiDir(tmp_path) == PkiDir(tmp_path)
    assert len({PkiDir(tmp_path), PkiDir(tmp_path)}) == 1


def test_pki_dir_accepts_a_string_root(tmp_path: Path) -> None:
    assert PkiDir(str(tmp_path)).ca_cert == tmp_path / "ca.crt"  # type: ignore[arg-type]
