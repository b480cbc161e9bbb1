"""Certificate rotation from a CSR (certs.sign_csr): the key stays on the device."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certs import PkiDir, PkiError, init_pki, issue_device_cert, read_records, revoke_device, sign_csr
from certs.authority import verify_issued_by_ca


def csr_for(common_name: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def fresh(tmp_path: Path) -> PkiDir:
    pki = init_pki(tmp_path / "pki")
    issue_device_cert(pki, "printer-1")
    return pki


def test_a_device_renews_with_its_own_new_key(fresh: PkiDir, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    out = tmp_path / "printer-1.new.crt"
    device_id, cert = sign_csr(fresh, csr_for("printer-1", key), cert_path=out)
    assert device_id == "printer-1"
    assert cert.public_key() == key.public_key()
    assert out.read_bytes() == cert.public_bytes(serialization.Encoding.PEM)
    verify_issued_by_ca(fresh, cert, out)
    serials = [r.serial for r in read_records(fresh) if r.common_name == "printer-1"]
    assert len(serials) == 2
    assert cert.serial_number in serials


@pytest.mark.parametrize(
    ("csr", "message"),
    [
        (b"not a csr", "not a PEM CSR"),
        (csr_for("printer-9"), "no device certificate was ever issued"),
        (csr_for("fleetcare-server"), "server identity"),
        (csr_for("printer-1", rsa.generate_private_key(public_exponent=65537, key_size=2048)), "EC P-256"),
    ],
)
def test_bad_requests_are_refused_naming_the_problem(fresh: PkiDir, csr: bytes, message: str) -> None:
    with pytest.raises(PkiError, match=message):
        sign_csr(fresh, csr)


def test_the_expected_identity_must_match(fresh: PkiDir) -> None:
    with pytest.raises(PkiError, match="expected 'printer-2'"):
        sign_csr(fresh, csr_for("printer-1"), expected_identity="printer-2")


def test_a_revoked_device_cannot_renew(fresh: PkiDir) -> None:
    revoke_device(fresh, "printer-1")
    with pytest.raises(PkiError, match="revoked"):
        sign_csr(fresh, csr_for("printer-1"))
