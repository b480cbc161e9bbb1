"""revoke_device and the CRL."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from certs import (
    PkiCorruptError,
    PkiDir,
    PkiMissingError,
    init_pki,
    issue_device_cert,
    refresh_crl,
    revoke_device,
    revoked_serials,
)


@pytest.fixture
def fresh(tmp_path: Path) -> PkiDir:
    return init_pki(tmp_path / "pki")


def serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def load_crl(pki: PkiDir) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(pki.crl.read_bytes())


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_new_pki_has_an_empty_crl_signed_by_the_ca(fresh: PkiDir) -> None:
    crl = load_crl(fresh)
    ca = x509.load_pem_x509_certificate(fresh.ca_cert.read_bytes())
    assert len(crl) == 0
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert revoked_serials(fresh) == frozenset()


def test_revoke_puts_the_serial_in_a_crl_that_verifies_against_the_ca(fresh: PkiDir) -> None:
    cert_path, _ = issue_device_cert(fresh, "dev-a")
    revoke_device(fresh, "dev-a")
    crl = load_crl(fresh)
    ca = x509.load_pem_x509_certificate(fresh.ca_cert.read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.subject
    assert crl.get_revoked_certificate_by_serial_number(serial(cert_path)) is not None
    assert crl.next_update_utc is not None
    assert crl.next_update_utc >= ca.not_valid_after_utc


def test_two_revokes_keep_both_serials_and_bump_the_crl_number(fresh: PkiDir) -> None:
    a, _ = issue_device_cert(fresh, "dev-a")
    b, _ = issue_device_cert(fresh, "dev-b")
    issue_device_cert(fresh, "dev-c")
    revoke_device(fresh, "dev-a")
    first = load_crl(fresh)
    revoke_device(fresh, "dev-b")
    second = load_crl(fresh)
    assert revoked_serials(fresh) == {serial(a), serial(b)}
    assert crl_number(second) == crl_number(first) + 1
    date_a = second.get_revoked_certificate_by_serial_number(serial(a))
    original = first.get_revoked_certificate_by_serial_number(serial(a))
    assert date_a is not None
    assert original is not None
    assert date_a.revocation_date_utc == original.revocation_date_utc


def test_revoke_is_idempotent(fresh: PkiDir) -> None:
    issue_device_cert(fresh, "dev-a")
    revoke_device(fresh, "dev-a")
    revoke_device(fresh, "dev-a")
    assert len(revoked_serials(fresh)) == 1


def test_revoke_covers_certificates_superseded_by_overwrite(fresh: PkiDir) -> None:
    old, _ = issue_device_cert(fresh, "dev-a")
    old_serial = serial(old)
    new, _ = issue_device_cert(fresh, "dev-a", overwrite=True)
    revoke_device(fresh, "dev-a")
    assert revoked_serials(fresh) == {old_serial, serial(new)}


def test_revoking_an_unknown_device_fails_clearly(fresh: PkiDir) -> None:
    with pytest.raises(PkiMissingError, match="no certificate was ever issued"):
        revoke_device(fresh, "ghost")


def test_a_crl_from_another_ca_is_refused(fresh: PkiDir, tmp_path: Path) -> None:
    other = init_pki(tmp_path / "other")
    fresh.crl.write_bytes(other.crl.read_bytes())
    issue_device_cert(fresh, "dev-a")
    with pytest.raises(PkiCorruptError, match="not signed"):
        revoke_device(fresh, "dev-a")


def test_refresh_keeps_entries(fresh: PkiDir) -> None:
    issue_device_cert(fresh, "dev-a")
    revoke_device(fresh, "dev-a")
    before = revoked_serials(fresh)
    refresh_crl(fresh)
    assert revoked_serials(fresh) == before
