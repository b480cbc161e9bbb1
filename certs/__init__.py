"""Fleet PKI: the CA, broker/server/device certificates, the command-signing key, revocation,
and the Mosquitto configuration that enforces them.

    from certs import PkiDir, init_pki, issue_device_cert, revoke_device, write_mosquitto_config

    pki = init_pki(Path("pki"), hosts=["broker.example.com"])
    cert, key = issue_device_cert(pki, "printer-0042")
    identity, cert, key = issue_server_cert(pki, "ingest-2")    # CN fleetcare-server-ingest-2
    write_mosquitto_config(pki, Path("pki/mosquitto"))          # conf, ACL, pid file location
    revoke_device(pki, "printer-0042")                          # CRL: no new connection
    refresh_acl(pki, Path("pki/mosquitto/acl"))                 # ACL: deny the live one
    reload_broker(Path("pki/mosquitto/mosquitto.pid"))          # SIGHUP
    device_id, cert = sign_csr(pki, csr_pem)                    # renewal, key stays on the device

Layout of the directory: :mod:`certs.store`. Errors: :mod:`certs.errors`. Guide: docs/pki.md.
"""

from certs.acl import AclChange, DenyEntry, DenyReason, acl_text, deny_now, read_denied, update_acl
from certs.authority import (
    init_pki,
    issue_broker_cert,
    issue_client_cert,
    issue_device_cert,
    issue_server_cert,
)
from certs.broker_config import PID_FILE_NAME, refresh_acl, write_mosquitto_config
from certs.errors import (
    InvalidIdentityError,
    PkiCorruptError,
    PkiError,
    PkiExistsError,
    PkiMissingError,
)
from certs.reload import ReloadOutcome, reload_broker
from certs.renewal import sign_csr
from certs.revocation import pki_denied, refresh_crl, revoke_device, revoked_identities, revoked_serials
from certs.store import (
    SERVER_IDENTITY,
    SERVER_IDENTITY_PREFIX,
    IssuedRecord,
    PkiDir,
    is_server_identity,
    issued_server_identities,
    read_records,
    server_identity,
    validate_identity,
)

__all__ = [
    "PID_FILE_NAME",
    "SERVER_IDENTITY",
    "SERVER_IDENTITY_PREFIX",
    "AclChange",
    "DenyEntry",
    "DenyReason",
    "InvalidIdentityError",
    "IssuedRecord",
    "PkiCorruptError",
    "PkiDir",
    "PkiError",
    "PkiExistsError",
    "PkiMissingError",
    "ReloadOutcome",
    "acl_text",
    "deny_now",
    "init_pki",
    "is_server_identity",
    "issue_broker_cert",
    "issue_client_cert",
    "issue_device_cert",
    "issue_server_cert",
    "issued_server_identities",
    "pki_denied",
    "read_denied",
    "read_records",
    "refresh_acl",
    "refresh_crl",
    "reload_broker",
    "revoke_device",
    "revoked_identities",
    "revoked_serials",
    "server_identity",
    "sign_csr",
    "update_acl",
    "validate_identity",
    "write_mosquitto_config",
]
