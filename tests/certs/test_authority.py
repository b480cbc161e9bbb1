"""init_pki and certificate issuance."""

from __future__ import annotations

import ipaddress
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import (
    SERVER_IDENTITY,
    InvalidIdentityError,
    PkiDir,
    PkiError,
    PkiExistsError,
    PkiMissingError,
    init_pki,
    issue_client_cert,
    issue_device_cert,
    read_records,
)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    return init_pki(tmp_path_factory.mktemp("authority") / "pki", hosts=["mqtt.example.com", "10.1.2.3"])


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_init_creates_every_file_with_private_keys_0600_and_dirs_0700(fresh: PkiDir) -> None:
    public = [fresh.ca_cert, fresh.broker_cert, fresh.server_client_cert, fresh.signing_pub, fresh.crl]
    private = [fresh.ca_key, fresh.broker_key, fresh.server_client_key, fresh.signing_key]
    for path in public:
        assert mode(path) == 0o644, path
    for path in private:
        assert mode(path) == 0o600, path
    assert mode(fresh.root) == 0o700
    assert mode(fresh.devices_dir) == 0o700
    assert not list(fresh.root.glob(".*.tmp"))


def test_init_keys_are_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        pki = init_pki(tmp_path / "pki")
    finally:
        os.umask(old)
    assert mode(pki.ca_key) == 0o600
    assert mode(pki.root) == 0o700


def test_ca_is_a_ten_year_pathlen0_ec_ca(fresh: PkiDir) -> None:
    ca = load_cert(fresh.ca_cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= timedelta(days=3650)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign


def test_broker_cert_names_localhost_loopbacks_and_extra_hosts(fresh: PkiDir) -> None:
    cert = load_cert(fresh.broker_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "mqtt.example.com"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3"),
    }
    assert eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    cert.verify_directly_issued_by(load_cert(fresh.ca_cert))


def test_server_client_cert_is_the_server_identity(fresh: PkiDir) -> None:
    cert = load_cert(fresh.server_client_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SERVER_IDENTITY
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(load_cert(fresh.ca_cert))


def test_signing_key_pair_is_ed25519_pkcs8_and_spki(fresh: PkiDir) -> None:
    private = serialization.load_pem_private_key(fresh.signing_key.read_bytes(), password=None)
    public = serialization.load_pem_public_key(fresh.signing_pub.read_bytes())
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert isinstance(public, ed25519.Ed25519PublicKey)
    assert fresh.signing_key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert fresh.signing_pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert private.public_key() == public


def test_init_refuses_to_replace_an_existing_ca(fresh: PkiDir) -> None:
    before = fresh.ca_cert.read_bytes()
    with pytest.raises(PkiExistsError, match="force"):
        init_pki(fresh.root)
    assert fresh.ca_cert.read_bytes() == before


def test_init_with_force_starts_over(tmp_path: Path) -> None:
    pki = init_pki(tmp_path / "pki")
    issue_device_cert(pki, "old-device")
    old_ca = pki.ca_cert.read_bytes()
    init_pki(pki.root, force=True)
    assert pki.ca_cert.read_bytes() != old_ca
    assert not pki.device_cert("old-device").exists()
    assert [r.kind for r in read_records(pki)] == ["ca", "broker", "server"]


def test_init_rejects_a_bad_host_before_writing_anything(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="host"):
        init_pki(tmp_path / "pki", hosts=["not a host"])
    assert not (tmp_path / "pki" / "ca.key").exists()


def test_device_cert_has_cn_chains_to_ca_and_is_a_p256_client_cert(fresh: PkiDir) -> None:
    cert_path, key_path = issue_device_cert(fresh, "printer-0001", days=30)
    assert (cert_path, key_path) == (fresh.device_cert("printer-0001"), fresh.device_key("printer-0001"))
    cert = load_cert(cert_path)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "printer-0001"
    cert.verify_directly_issued_by(load_cert(fresh.ca_cert))
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - datetime.now(UTC) <= timedelta(days=30)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == public
    assert mode(key_path) == 0o600


def test_device_cert_is_recorded_in_the_index(fresh: PkiDir) -> None:
    cert_path, _ = issue_device_cert(fresh, "indexed-1")
    records = [r for r in read_records(fresh) if r.common_name == "indexed-1"]
    assert len(records) == 1
    assert records[0].kind == "device"
    assert records[0].serial == load_cert(cert_path).serial_number
    assert records[0].not_after == load_cert(cert_path).not_valid_after_utc


def test_device_cert_is_not_overwritten_unless_asked(fresh: PkiDir) -> None:
    cert_path, _ = issue_device_cert(fresh, "twice")
    first = cert_path.read_bytes()
    with pytest.raises(PkiExistsError, match="overwrite"):
        issue_device_cert(fresh, "twice")
    assert cert_path.read_bytes() == first
    issue_device_cert(fresh, "twice", overwrite=True)
    assert cert_path.read_bytes() != first


@pytest.mark.parametrize(
    "device_id",
    ["", "a/b", "dev+1", "dev#", "has space", "x" * 65, ".", "..", "dev\n", "émile", "../ca"],
)
def test_invalid_device_ids_are_rejected_naming_the_id_and_rule(fresh: PkiDir, device_id: str) -> None:
    with pytest.raises(InvalidIdentityError) as info:
        issue_device_cert(fresh, device_id)
    assert repr(device_id) in str(info.value)
    assert "A-Z a-z 0-9" in str(info.value)
    assert info.value.identity == device_id


def test_path_helpers_refuse_ids_that_escape_the_devices_dir(fresh: PkiDir) -> None:
    with pytest.raises(InvalidIdentityError):
        fresh.device_key("../ca")


def test_device_id_may_not_impersonate_the_server(fresh: PkiDir) -> None:
    with pytest.raises(InvalidIdentityError, match="reserved"):
        issue_device_cert(fresh, SERVER_IDENTITY)


def test_longest_valid_device_id_is_accepted(fresh: PkiDir) -> None:
    device_id = "A-z_0.9" + "x" * 57
    assert len(device_id) == 64
    cert_path, _ = issue_device_cert(fresh, device_id)
    assert cert_path.name == f"{device_id}.crt"


def test_validity_must_be_positive(fresh: PkiDir) -> None:
    with pytest.raises(PkiError, match="at least 1 day"):
        issue_device_cert(fresh, "zero-days", days=0)


def test_issuing_without_a_ca_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(PkiMissingError, match="init"):
        issue_device_cert(PkiDir(tmp_path / "nowhere"), "dev-1")
    assert not (tmp_path / "nowhere").exists()


def test_client_cert_for_an_arbitrary_identity(fresh: PkiDir, tmp_path: Path) -> None:
    cert_path, key_path = issue_client_cert(
        fresh, "ingest-2", cert_path=tmp_path / "ingest.crt", key_path=tmp_path / "ingest.key"
    )
    cert = load_cert(cert_path)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ingest-2"
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert mode(key_path) == 0o600


def test_a_reinitialised_ca_is_picked_up_by_a_running_process(tmp_path: Path) -> None:
    pki = init_pki(tmp_path / "pki")
    issue_device_cert(pki, "before")  # loads and caches the first CA
    init_pki(pki.root, force=True)
    cert_path, _ = issue_device_cert(pki, "after")
    load_cert(cert_path).verify_directly_issued_by(load_cert(pki.ca_cert))


def test_concurrent_issuance_of_one_id_yields_exactly_one_certificate(fresh: PkiDir) -> None:
    def attempt(_: int) -> str:
        try:
            issue_device_cert(fresh, "raced")
        except PkiExistsError:
            return "refused"
        return "issued"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, range(16)))
    assert outcomes.count("issued") == 1
    cert = load_cert(fresh.device_cert("raced"))
    key = serialization.load_pem_private_key(fresh.device_key("raced").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == cert.public_key()
    assert not list(fresh.devices_dir.glob(".*.tmp"))
