"""Certificate renewal from a device's certificate signing request: the key never leaves it.

Its own module because it needs both the authority (to sign) and the revocation list (a
revoked device may not renew), while revocation itself builds on the authority.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.authority import DEFAULT_LEAF_DAYS, LEAF_CURVE, record_issued, sign_leaf
from certs.errors import InvalidIdentityError, PkiError
from certs.revocation import revoked_identities
from certs.store import PkiDir, is_server_identity, read_records, validate_identity, write_file

__all__ = ["sign_csr"]

logger = logging.getLogger(__name__)


def sign_csr(
    pki: PkiDir,
    csr_pem: bytes,
    *,
    expected_identity: str | None = None,
    days: int = DEFAULT_LEAF_DAYS,
    cert_path: Path | None = None,
    overwrite: bool = False,
) -> tuple[str, x509.Certificate]:
    """Renew a device's certificate from its certificate signing request (the key never leaves
    the device). Returns ``(device_id, certificate)``; the certificate is recorded in
    ``issued.jsonl``, so :func:`certs.revoke_device` revokes it too, and written (PEM) to
    ``cert_path`` when given (refused if it exists, unless ``overwrite``). The certificates the device
    held before stay valid until they expire or are revoked: it can switch at its next reconnect.

    Refused (PkiError naming the problem): a request that is not a PEM CSR, whose signature does
    not verify (the requester does not hold the key), whose subject is not exactly one CN, whose
    key is not EC P-256, whose CN this CA never issued a device certificate to (renewal, not
    enrolment), a server identity, or an identity whose every certificate is revoked.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PkiError(f"certificate request: not a PEM CSR ({exc})") from exc
    if not csr.is_signature_valid:
        raise PkiError("certificate request: its signature does not verify (not made with its key)")
    if len(csr.subject) != 1:
        raise PkiError(
            f"certificate request: subject must be exactly one CN, got {csr.subject.rfc4514_string()!r}"
        )
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise PkiError(
            f"certificate request: subject must be exactly one CN, got {csr.subject.rfc4514_string()!r}"
        )
    device_id = validate_identity(names[0].value)
    if expected_identity is not None and device_id != expected_identity:
        raise PkiError(f"certificate request: CN is {device_id!r}, expected {expected_identity!r}")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != LEAF_CURVE.name:
        raise PkiError("certificate request: the key must be EC P-256 (as every fleet certificate)")
    if is_server_identity(device_id):
        raise InvalidIdentityError(device_id, "is a server identity: issue it with `fleetcare certs server`")
    if not any(r.kind == "device" and r.common_name == device_id for r in read_records(pki)):
        raise PkiError(
            f"certificate request: no device certificate was ever issued to {device_id!r}; "
            "provision it first (`fleetcare certs device`)"
        )
    if device_id in revoked_identities(pki):
        raise PkiError(f"certificate request: device {device_id!r} is revoked; it cannot renew")
    cert = sign_leaf(pki, device_id, public_key, days=days, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    if cert_path is not None:
        write_file(
            cert_path,
            cert.public_bytes(serialization.Encoding.PEM),
            private=False,
            overwrite=overwrite,
            exists_hint="pass overwrite=True (CLI: --overwrite) to replace it",
        )
    record_issued(pki, "device", device_id, cert, cert_path or Path(f"(renewal {cert.serial_number:x})"))
    logger.info(
        "renewed device %s: serial %x until %s", device_id, cert.serial_number, cert.not_valid_after_utc
    )
    return device_id, cert
