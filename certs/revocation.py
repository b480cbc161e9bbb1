"""Certificate revocation: ``crl.pem``, signed by the fleet CA, read by the broker and the server.

``crl.pem`` is itself the store of revoked serials: each update reads it (checking the CA's
signature), adds entries and re-signs it with the next CRL number, under a file lock.

``nextUpdate`` is set to the CA's expiry. The broker (OpenSSL) refuses *every* client once a
CRL's nextUpdate has passed, and a stale-CRL attack needs write access to the broker's own
files anyway, so a short CRL lifetime would buy an outage risk and no security.

The broker reads the CRL when it starts and on SIGHUP (see docs/pki.md); revoking does not
disconnect a session that is already open.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from cryptography import x509

from certs.acl import DenyEntry
from certs.authority import load_authority, verify_issued_by_ca, write_crl
from certs.errors import PkiCorruptError, PkiMissingError
from certs.store import IssuedRecord, PkiDir, pki_lock, read_records, validate_identity

__all__ = [
    "pki_denied",
    "refresh_crl",
    "revoke_device",
    "revoke_serials",
    "revoked_identities",
    "revoked_serials",
]

logger = logging.getLogger(__name__)


def _read_crl(pki: PkiDir) -> x509.CertificateRevocationList | None:
    try:
        data = pki.crl.read_bytes()
    except FileNotFoundError:
        return None
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise PkiCorruptError(pki.crl, f"not a PEM CRL ({exc})") from exc
    authority = load_authority(pki)
    if crl.issuer != authority.cert.subject or not crl.is_signature_valid(authority.key.public_key()):
        raise PkiCorruptError(pki.crl, "is not signed by this PKI's CA")
    return crl


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def _update(pki: PkiDir, add: Iterable[int]) -> None:
    with pki_lock(pki):
        crl = _read_crl(pki)
        entries = {r.serial_number: r.revocation_date_utc for r in crl} if crl is not None else {}
        now = datetime.now(UTC).replace(microsecond=0)
        for serial in add:
            entries.setdefault(serial, now)
        write_crl(pki, entries, number=(_crl_number(crl) + 1) if crl is not None else 1)


def revoke_serials(pki: PkiDir, serials: Iterable[int]) -> None:
    """Add certificate serial numbers to the CRL (entries already there keep their date)."""
    _update(pki, list(serials))


def revoke_device(pki: PkiDir, device_id: str) -> int:
    """Revoke every certificate ever issued to ``device_id`` and re-sign ``crl.pem``.

    Serials come from ``issued.jsonl`` and from the current ``devices/<id>.crt``, so a
    certificate superseded with ``overwrite=True`` is revoked as well. Idempotent. Returns the
    number of certificates the CRL now lists for the device.

    The CRL only stops new connections; to cut off a live one the broker's ACL must deny the
    identity as well (:func:`pki_denied`, ``fleetcare certs revoke`` does both).
    """
    validate_identity(device_id)
    serials = {r.serial for r in read_records(pki) if r.kind == "device" and r.common_name == device_id}
    cert_path = pki.device_cert(device_id)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise PkiCorruptError(cert_path, f"not a PEM certificate ({exc})") from exc
    else:
        verify_issued_by_ca(pki, cert, cert_path)
        serials.add(cert.serial_number)
    if not serials:
        raise PkiMissingError(cert_path, f"no certificate was ever issued to device {device_id!r}")
    _update(pki, serials)
    logger.info("revoked device %s (%d certificate(s))", device_id, len(serials))
    return len(serials)


def revoked_serials(pki: PkiDir) -> frozenset[int]:
    """Serial numbers on the CA-verified CRL; what the server consults to refuse a revoked peer."""
    crl = _read_crl(pki)
    if crl is None:
        raise PkiMissingError(pki.crl, "initialise the PKI first (`fleetcare certs init`)")
    return frozenset(r.serial_number for r in crl)


def refresh_crl(pki: PkiDir) -> None:
    """Re-sign ``crl.pem`` with its current entries (e.g. after the CA was renewed)."""
    _update(pki, ())


_IDENTITY_KINDS = frozenset({"device", "client", "server"})


def revoked_identities(pki: PkiDir) -> dict[str, datetime]:
    """Identities with no usable certificate left: at least one revoked, none unrevoked and
    unexpired. Maps each to its latest revocation time.

    A certificate revoked on its own (an old key after a rotation) leaves its identity alone while
    the identity holds another valid certificate; re-issuing one to a revoked identity lets it in
    again.
    """
    crl = _read_crl(pki)
    if crl is None:
        return {}
    revoked = {r.serial_number: r.revocation_date_utc for r in crl}
    now = datetime.now(UTC)
    by_identity: dict[str, list[IssuedRecord]] = {}
    for record in read_records(pki):
        if record.kind in _IDENTITY_KINDS:
            by_identity.setdefault(record.common_name, []).append(record)
    result: dict[str, datetime] = {}
    for identity, records in by_identity.items():
        dates = [revoked[r.serial] for r in records if r.serial in revoked]
        live = [r for r in records if r.serial not in revoked and r.not_after > now]
        if dates and not live:
            result[identity] = max(dates)
    return result


def pki_denied(pki: PkiDir) -> list[DenyEntry]:
    """The broker ACL's deny entries the PKI vouches for (source ``certs``): revoked identities."""
    return [
        DenyEntry(identity, "revoked", "certs", when.replace(microsecond=0))
        for identity, when in sorted(revoked_identities(pki).items())
    ]
