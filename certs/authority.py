"""The fleet CA: create it, and issue broker, server and device certificates from it.

Key choices:
- CA: EC P-256, 10 years, ``pathLen=0`` (signs leaf certificates only), signs with SHA-256.
  P-256 matches the leaves' strength and signs about twice as fast as P-384 (1000 device
  certificates take under a second, most of it file I/O).
- Leaves: EC P-256 keys (cheap for small devices, universally supported by TLS stacks),
  valid ``days`` (825 by default) but never beyond the CA's own expiry.
- Clocks: ``notBefore`` is back-dated by an hour so a device or broker whose clock is a little
  behind does not reject a certificate issued a moment ago.

Issuing is cheap (a P-256 key, one P-384 signature, two small files and one index line); the
loaded CA is cached per process, keyed on the CA files' identity and mtime so a re-init is seen.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.errors import (
    InvalidIdentityError,
    PkiCorruptError,
    PkiError,
    PkiExistsError,
    PkiMissingError,
)
from certs.store import (
    SERVER_IDENTITY,
    SERVER_IDENTITY_PREFIX,
    CertKind,
    IssuedRecord,
    PkiDir,
    append_record,
    ensure_private_dir,
    is_server_identity,
    pki_lock,
    server_identity,
    validate_identity,
    write_file,
)

__all__ = [
    "CA_HASH",
    "CA_VALIDITY_DAYS",
    "DEFAULT_BROKER_HOSTS",
    "DEFAULT_LEAF_DAYS",
    "Authority",
    "init_pki",
    "issue_broker_cert",
    "issue_client_cert",
    "issue_device_cert",
    "issue_server_cert",
    "load_authority",
    "record_issued",
    "sign_leaf",
    "verify_issued_by_ca",
    "write_crl",
]

logger = logging.getLogger(__name__)

CA_VALIDITY_DAYS = 3650
DEFAULT_LEAF_DAYS = 825
DEFAULT_BROKER_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_COMMON_NAME = "fleetcare fleet CA"
ORGANIZATION = "fleetcare"
BACKDATE = timedelta(hours=1)

_CA_CURVE = ec.SECP256R1()
CA_HASH = hashes.SHA256()
LEAF_CURVE = ec.SECP256R1()
_DNS_NAME = re.compile(r"(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


@dataclass(frozen=True, slots=True)
class Authority:
    """The loaded CA: certificate, private key, and what every issued certificate copies from it."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    aki: x509.AuthorityKeyIdentifier
    not_after: datetime


_cache: dict[tuple[object, ...], Authority] = {}


def _init_hint(pki: PkiDir) -> str:
    return f"initialise the PKI first (`fleetcare certs init --dir {pki.root}` or certs.init_pki())"


def load_authority(pki: PkiDir) -> Authority:
    """The CA of ``pki``, cached per process; re-read when ca.crt or ca.key changes on disk."""
    try:
        key_stat, cert_stat = os.stat(pki.ca_key), os.stat(pki.ca_cert)
    except FileNotFoundError as exc:
        raise PkiMissingError(Path(str(exc.filename)), _init_hint(pki)) from exc
    cache_key = (
        os.path.abspath(pki.root),
        key_stat.st_ino,
        key_stat.st_mtime_ns,
        key_stat.st_size,
        cert_stat.st_ino,
        cert_stat.st_mtime_ns,
        cert_stat.st_size,
    )
    authority = _cache.get(cache_key)
    if authority is None:
        authority = _read_authority(pki)
        if len(_cache) > 16:
            _cache.clear()
        _cache[cache_key] = authority
    return authority


def _read_authority(pki: PkiDir) -> Authority:
    try:
        cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    except ValueError as exc:
        raise PkiCorruptError(pki.ca_cert, f"not a PEM certificate ({exc})") from exc
    try:
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise PkiCorruptError(pki.ca_key, f"not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiCorruptError(pki.ca_key, f"expected an EC private key, got {type(key).__name__}")
    cert_key = cert.public_key()
    if (
        not isinstance(cert_key, ec.EllipticCurvePublicKey)
        or cert_key.public_numbers() != key.public_key().public_numbers()
    ):
        raise PkiCorruptError(pki.ca_key, f"does not match the public key in {pki.ca_cert}")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return Authority(
        cert=cert,
        key=key,
        aki=x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
        not_after=cert.not_valid_after_utc,
    )


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _key_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _new_ca(pki: PkiDir, now: datetime) -> None:
    key = ec.generate_private_key(_CA_CURVE)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, CA_HASH)
    )
    write_file(pki.ca_key, _key_pem(key), private=True, overwrite=True)
    write_file(pki.ca_cert, cert.public_bytes(serialization.Encoding.PEM), private=False, overwrite=True)
    record_issued(pki, "ca", CA_COMMON_NAME, cert, pki.ca_cert)


_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _issue(
    pki: PkiDir,
    *,
    kind: CertKind,
    common_name: str,
    cert_path: Path,
    key_path: Path,
    days: int,
    overwrite: bool,
    usage: x509.ObjectIdentifier,
    san: Sequence[x509.GeneralName] = (),
) -> tuple[Path, Path]:
    if not overwrite:
        for path in (cert_path, key_path):
            if path.exists():
                raise PkiExistsError(path, "pass overwrite=True (CLI: --overwrite) to issue a new one")
    key = ec.generate_private_key(LEAF_CURVE)
    cert = sign_leaf(pki, common_name, key.public_key(), days=days, usage=usage, san=san)
    hint = "pass overwrite=True (CLI: --overwrite) to issue a new one"
    write_file(key_path, _key_pem(key), private=True, overwrite=overwrite, exists_hint=hint)
    try:
        write_file(
            cert_path,
            cert.public_bytes(serialization.Encoding.PEM),
            private=False,
            overwrite=overwrite,
            exists_hint=hint,
        )
    except PkiExistsError:
        key_path.unlink()  # lost a race for the same name: do not leave our key behind
        raise
    record_issued(pki, kind, common_name, cert, cert_path)
    return cert_path, key_path


def sign_leaf(
    pki: PkiDir,
    common_name: str,
    public_key: ec.EllipticCurvePublicKey,
    *,
    days: int,
    usage: x509.ObjectIdentifier,
    san: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    """A leaf certificate for ``public_key``: CN only, the CA's extensions, never past the CA."""
    if days < 1:
        raise PkiError(f"certificate validity must be at least 1 day, got {days}")
    authority = load_authority(pki)
    now = _now()
    not_after = min(now + timedelta(days=days), authority.not_after)
    if not_after <= now:
        raise PkiCorruptError(pki.ca_cert, f"the CA expired on {authority.not_after:%Y-%m-%d}")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(authority.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority.aki, critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    return builder.sign(authority.key, CA_HASH)


def record_issued(pki: PkiDir, kind: CertKind, common_name: str, cert: x509.Certificate, path: Path) -> None:
    try:
        relative = str(path.relative_to(pki.root))
    except ValueError:
        relative = str(path)
    append_record(
        pki,
        IssuedRecord(
            kind=kind,
            common_name=common_name,
            serial=cert.serial_number,
            not_after=cert.not_valid_after_utc,
            issued_at=_now(),
            cert=relative,
        ),
    )


def issue_device_cert(
    pki: PkiDir, device_id: str, *, days: int = DEFAULT_LEAF_DAYS, overwrite: bool = False
) -> tuple[Path, Path]:
    """Issue ``devices/<device_id>.crt`` + ``.key`` (EC P-256, CN = device_id, clientAuth).

    Returns ``(cert_path, key_path)``. Refuses an existing certificate unless ``overwrite``;
    the superseded certificate stays valid until it expires or :func:`revoke_device` is called
    (which revokes every certificate ever issued to the id).
    """
    validate_identity(device_id)
    if is_server_identity(device_id):
        raise InvalidIdentityError(
            device_id,
            f"{SERVER_IDENTITY} and {SERVER_IDENTITY_PREFIX}* are reserved for the fleet server's "
            "identities and would inherit their broker ACL",
        )
    load_authority(pki)  # fail on a missing CA before creating anything
    if not pki.devices_dir.is_dir():
        ensure_private_dir(pki.devices_dir)
    return _issue(
        pki,
        kind="device",
        common_name=device_id,
        cert_path=pki.device_cert(device_id),
        key_path=pki.device_key(device_id),
        days=days,
        overwrite=overwrite,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )


def issue_client_cert(
    pki: PkiDir,
    common_name: str,
    *,
    cert_path: Path,
    key_path: Path,
    days: int = DEFAULT_LEAF_DAYS,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Issue an MQTT client certificate (clientAuth) for any ``common_name``.

    The CN becomes the broker username and client id, so it follows the device-id rule. It is
    *not* checked against device ids; for a server process use :func:`issue_server_cert`, whose
    identities the broker ACL grants the server's topics.
    """
    validate_identity(common_name, what="common name")
    return _issue(
        pki,
        kind="client",
        common_name=common_name,
        cert_path=cert_path,
        key_path=key_path,
        days=days,
        overwrite=overwrite,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )


def issue_server_cert(
    pki: PkiDir, name: str, *, days: int = DEFAULT_LEAF_DAYS, overwrite: bool = False
) -> tuple[str, Path, Path]:
    """Issue the certificate of one fleet server process: CN ``fleetcare-server-<name>``.

    Returns ``(identity, cert_path, key_path)``, in ``servers/``. The broker uses the CN as the
    client id, so every server process connected at the same time needs its own; the ACL grants
    every issued server identity the server's topics once it is regenerated
    (:func:`certs.refresh_acl`, ``fleetcare certs server`` does it).
    """
    identity = server_identity(name)
    load_authority(pki)
    if identity == SERVER_IDENTITY:
        cert_path, key_path = pki.server_client_cert, pki.server_client_key
    else:
        if not pki.servers_dir.is_dir():
            ensure_private_dir(pki.servers_dir)
        cert_path, key_path = pki.server_cert(identity), pki.server_key(identity)
    _issue(
        pki,
        kind="server",
        common_name=identity,
        cert_path=cert_path,
        key_path=key_path,
        days=days,
        overwrite=overwrite,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return identity, cert_path, key_path


def _general_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in (*DEFAULT_BROKER_HOSTS, *hosts):
        host = raw.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]  # "[::1]" as written in URLs
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if not _DNS_NAME.fullmatch(host) or len(host) > 253:
                raise PkiError(
                    f"invalid broker host name {raw!r}: expected a DNS name or an IP address"
                ) from None
            key = host.lower().rstrip(".")
            if key not in seen:
                seen.add(key)
                names.append(x509.DNSName(key))
        else:
            if str(address) not in seen:
                seen.add(str(address))
                names.append(x509.IPAddress(address))
    return names


def issue_broker_cert(
    pki: PkiDir, hosts: Sequence[str] = (), *, days: int = DEFAULT_LEAF_DAYS
) -> tuple[Path, Path]:
    """(Re-)issue the broker's TLS server certificate (serverAuth).

    SAN: localhost, 127.0.0.1, ::1 plus ``hosts`` (DNS names or IP addresses). CN is the first
    extra host, else ``localhost``. Always overwrites: re-run it to add a host name.
    """
    names = _general_names(hosts)
    extra = [h.strip().strip("[]") for h in hosts]
    common_name = extra[0] if extra else "localhost"
    return _issue(
        pki,
        kind="broker",
        common_name=common_name,
        cert_path=pki.broker_cert,
        key_path=pki.broker_key,
        days=days,
        overwrite=True,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=names,
    )


def _new_signing_key(pki: PkiDir) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_file(pki.signing_key, _key_pem(key), private=True, overwrite=True)
    write_file(pki.signing_pub, public, private=False, overwrite=True)


def _clear_issued(pki: PkiDir) -> None:
    """On a forced re-init, forget everything signed by the old CA: it can no longer be verified."""
    for directory in (pki.devices_dir, pki.servers_dir):
        if directory.is_dir():
            shutil.rmtree(directory)
    for path in (pki.index, pki.crl):
        path.unlink(missing_ok=True)


CRL_BACKDATE = timedelta(minutes=5)
"""A CRL's thisUpdate lies this far back, as a leaf's notBefore does: clocks differ."""


def write_crl(pki: PkiDir, entries: Mapping[int, datetime], *, number: int = 1) -> None:
    """Sign and write ``crl.pem`` listing ``entries`` (serial -> revocation time)."""
    authority = load_authority(pki)
    now = datetime.now(UTC).replace(microsecond=0)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.cert.subject)
        .last_update(now - CRL_BACKDATE)
        .next_update(authority.not_after)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(authority.aki, critical=False)
    )
    for serial, when in sorted(entries.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(authority.key, CA_HASH)
    write_file(pki.crl, crl.public_bytes(serialization.Encoding.PEM), private=False, overwrite=True)


def init_pki(root: Path, *, hosts: Sequence[str] = (), force: bool = False) -> PkiDir:
    """Create a fleet PKI in ``root``: CA, broker cert, server client cert, signing key, empty CRL.

    Refuses if a CA already exists there unless ``force``, which starts over: the old CA,
    every device certificate, the index and the CRL are replaced or removed.
    """
    pki = PkiDir(Path(root))
    _general_names(hosts)  # validate before touching anything
    ensure_private_dir(pki.root)
    with pki_lock(pki):
        existing = [p for p in (pki.ca_cert, pki.ca_key) if p.exists()]
        if existing and not force:
            raise PkiExistsError(
                existing[0],
                "refusing to replace the CA (every certificate it issued would stop working); "
                "use force=True (CLI: --force) to start over",
            )
        if existing:
            logger.warning("re-initialising the PKI in %s: the old CA and device certificates are gone", root)
            _clear_issued(pki)
        now = _now()
        _new_ca(pki, now)
        ensure_private_dir(pki.devices_dir)
        issue_broker_cert(pki, hosts)
        issue_server_cert(pki, SERVER_IDENTITY, overwrite=True)
        _new_signing_key(pki)
        write_crl(pki, {})
    logger.info("initialised fleet PKI in %s", root)
    return pki


def verify_issued_by_ca(pki: PkiDir, cert: x509.Certificate, path: Path) -> None:
    """Raise PkiCorruptError unless ``cert`` carries a valid signature of this CA."""
    authority = load_authority(pki)
    try:
        cert.verify_directly_issued_by(authority.cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PkiCorruptError(path, "was not issued by this PKI's CA") from exc
