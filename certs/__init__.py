"""Fleet PKI: the CA, broker/server/device certificates, the command-signing key, revocation,
and the Mosquitto configuration that enforces them.

    from certs import PkiDir, init_pki, issue_device_cert, revoke_device, write_mosquitto_config

    pki = init_pki(Path("pki"), hosts=["broker.example.com"])
    cert, key = issue_device_cert(pki, "printer-0042")
    revoke_device(pki, "printer-0042")
    write_mosquitto_config(pki, Path("pki/mosquitto"))

Layout of the directory: :mod:`certs.store`. Errors: :mod:`certs.errors`. Guide: docs/pki.md.
"""

from certs.authority import init_pki, issue_broker_cert, issue_client_cert, issue_device_cert
from certs.broker_config import acl_text, write_mosquitto_config
from certs.errors import (
    InvalidIdentityError,
    PkiCorruptError,
    PkiError,
    PkiExistsError,
    PkiMissingError,
)
from certs.revocation import refresh_crl, revoke_device, revoked_serials
from certs.store import SERVER_IDENTITY, IssuedRecord, PkiDir, read_records, validate_identity

__all__ = [
    "SERVER_IDENTITY",
    "InvalidIdentityError",
    "IssuedRecord",
    "PkiCorruptError",
    "PkiDir",
    "PkiError",
    "PkiExistsError",
    "PkiMissingError",
    "acl_text",
    "init_pki",
    "issue_broker_cert",
    "issue_client_cert",
    "issue_device_cert",
    "read_records",
    "refresh_crl",
    "revoke_device",
    "revoked_serials",
    "validate_identity",
    "write_mosquitto_config",
]
