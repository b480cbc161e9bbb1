"""The on-disk layout of a fleet PKI directory, and the careful ways of writing into it.

    <root>/                 0700
        ca.crt ca.key       the fleet CA (key 0600)
        broker.crt/.key     TLS server certificate of the MQTT broker
        server.crt/.key     the fleet server's MQTT client identity (CN = SERVER_IDENTITY)
        servers/            0700; <identity>.crt and .key of named server processes
                            (CN = fleetcare-server-<name>, ``fleetcare certs server <name>``)
        signing.key/.pub    Ed25519 command-signing key pair (agents pin signing.pub)
        crl.pem             certificate revocation list, signed by the CA
        issued.jsonl        append-only log of every certificate issued (one JSON object a line)
        devices/            0700; <device_id>.crt and <device_id>.key

Every private key is created 0600 from its first byte (``os.open`` with an explicit mode on a
temporary file, then linked or renamed into place), so it is never readable by others, not even
for an instant, and a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from certs.errors import InvalidIdentityError, PkiCorruptError, PkiExistsError

__all__ = [
    "IDENTITY_RULE",
    "SERVER_IDENTITY",
    "SERVER_IDENTITY_PREFIX",
    "IssuedRecord",
    "PkiDir",
    "append_record",
    "ensure_private_dir",
    "is_server_identity",
    "issued_server_identities",
    "pki_lock",
    "read_records",
    "server_identity",
    "validate_identity",
    "write_file",
]

SERVER_IDENTITY = "fleetcare-server"
"""CN of the fleet server's default MQTT client certificate, hence its broker username and,
with ``use_username_as_clientid``, its client id."""

SERVER_IDENTITY_PREFIX = f"{SERVER_IDENTITY}-"
"""Every further server process has its own identity ``fleetcare-server-<name>``: the broker makes
the certificate CN the client id, so two processes sharing one certificate would take turns
knocking each other off. Device ids may not start with it (nor be SERVER_IDENTITY)."""

IDENTITY_RULE = "must be 1-64 characters of A-Z a-z 0-9 . _ - (no '/', '+', '#', spaces), not '.' or '..'"
_IDENTITY_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
PRIVATE_DIR_MODE = 0o700

CertKind = Literal["ca", "broker", "client", "device", "server"]


def is_server_identity(identity: str) -> bool:
    """True for ``fleetcare-server`` and ``fleetcare-server-<name>``: the names the broker ACL
    grants the server's topics to, and that no device certificate may carry."""
    return identity == SERVER_IDENTITY or (
        identity.startswith(SERVER_IDENTITY_PREFIX) and len(identity) > len(SERVER_IDENTITY_PREFIX)
    )


def server_identity(name: str) -> str:
    """The identity (certificate CN, broker username and client id) of the server process ``name``:
    ``fleetcare-server-<name>``; a name already carrying the prefix is taken as it is."""
    identity = name if is_server_identity(name) else f"{SERVER_IDENTITY_PREFIX}{name}"
    return validate_identity(identity, what="server identity")


def validate_identity(identity: str, *, what: str = "device id") -> str:
    """Return ``identity`` if it is safe as a certificate CN, broker username, topic level and file name.

    The same rule as :func:`protocol.topics.validate_device_id`: a ``/``, ``+`` or ``#`` would
    break the topic tree and the ACL ``%u`` patterns, and ``/`` or ``..`` would escape ``devices/``.
    """
    if not isinstance(identity, str) or not _IDENTITY_RE.fullmatch(identity) or identity in {".", ".."}:
        raise InvalidIdentityError(str(identity), IDENTITY_RULE, what=what)
    return identity


@dataclass(frozen=True, slots=True)
class PkiDir:
    """Paths inside a PKI directory. Pure path arithmetic: no property touches the disk."""

    root: Path

    def __post_init__(self) -> None:
        if not isinstance(self.root, Path):
            object.__setattr__(self, "root", Path(self.root))  # accept a str as well

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def broker_cert(self) -> Path:
        return self.root / "broker.crt"

    @property
    def broker_key(self) -> Path:
        return self.root / "broker.key"

    @property
    def server_client_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_client_key(self) -> Path:
        return self.root / "server.key"

    @property
    def signing_key(self) -> Path:
        return self.root / "signing.key"

    @property
    def signing_pub(self) -> Path:
        return self.root / "signing.pub"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def index(self) -> Path:
        return self.root / "issued.jsonl"

    @property
    def devices_dir(self) -> Path:
        return self.root / "devices"

    def device_cert(self, device_id: str) -> Path:
        """``root/devices/<device_id>.crt``; raises InvalidIdentityError for an unsafe id."""
        return self.devices_dir / f"{validate_identity(device_id)}.crt"

    def device_key(self, device_id: str) -> Path:
        """``root/devices/<device_id>.key``; raises InvalidIdentityError for an unsafe id."""
        return self.devices_dir / f"{validate_identity(device_id)}.key"

    @property
    def servers_dir(self) -> Path:
        return self.root / "servers"

    def server_cert(self, identity: str) -> Path:
        """The certificate of a server identity: ``server.crt`` for SERVER_IDENTITY, else
        ``root/servers/<identity>.crt``."""
        if validate_identity(identity, what="server identity") == SERVER_IDENTITY:
            return self.server_client_cert
        return self.servers_dir / f"{identity}.crt"

    def server_key(self, identity: str) -> Path:
        if validate_identity(identity, what="server identity") == SERVER_IDENTITY:
            return self.server_client_key
        return self.servers_dir / f"{identity}.key"

    @property
    def broker_dir(self) -> Path:
        """Where ``fleetcare certs broker-config`` writes mosquitto.conf, the ACL and the pid file."""
        return self.root / "mosquitto"


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed and make it 0700 whatever the umask."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if (path.stat().st_mode & 0o777) != PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)


def write_file(path: Path, data: bytes, *, private: bool, overwrite: bool, exists_hint: str = "") -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (private) or 0644.

    The bytes go to a temporary file created with its final mode (``O_EXCL``, so never through
    a pre-planted file or symlink), which is then renamed over ``path`` (``overwrite``) or
    hard-linked to it, which fails if ``path`` exists: no window where a key is readable by
    others or a file is seen half-written.
    """
    mode = PRIVATE_FILE_MODE if private else PUBLIC_FILE_MODE
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # the umask may have removed bits from a public file
            fh.write(data)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise PkiExistsError(path, exists_hint or "refusing to overwrite it") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def pki_lock(pki: PkiDir) -> Iterator[None]:
    """Serialise read-modify-write operations (init, CRL update) across processes."""
    fd = os.open(pki.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass(frozen=True, slots=True)
class IssuedRecord:
    """One line of ``issued.jsonl``: a certificate this CA signed."""

    kind: CertKind
    common_name: str
    serial: int
    not_after: datetime
    issued_at: datetime
    cert: str  # path of the certificate relative to the PKI root

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "cn": self.common_name,
                "serial": format(self.serial, "x"),  # hex: serials exceed a JSON number's precision
                "not_after": self.not_after.isoformat(),
                "issued_at": self.issued_at.isoformat(),
                "cert": self.cert,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> IssuedRecord:
        obj = json.loads(line)
        return cls(
            kind=obj["kind"],
            common_name=obj["cn"],
            serial=int(obj["serial"], 16),
            not_after=datetime.fromisoformat(obj["not_after"]),
            issued_at=datetime.fromisoformat(obj["issued_at"]),
            cert=obj["cert"],
        )


def append_record(pki: PkiDir, record: IssuedRecord) -> None:
    """Append one record with a single ``O_APPEND`` write: O(1) per certificate, safe across processes."""
    fd = os.open(pki.index, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        os.write(fd, (record.to_json() + "\n").encode())
    finally:
        os.close(fd)


def read_records(pki: PkiDir) -> list[IssuedRecord]:
    """Every certificate recorded in ``issued.jsonl``, oldest first (empty if there is no index)."""
    try:
        text = pki.index.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(IssuedRecord.from_json(line))
        except (ValueError, KeyError, TypeError) as exc:
            raise PkiCorruptError(pki.index, f"line {lineno} is not a valid record ({exc})") from exc
    return records


def issued_server_identities(pki: PkiDir) -> list[str]:
    """Every server identity this CA issued a certificate to (SERVER_IDENTITY always first).

    Records of kind ``server``, and of kind ``client`` with a server identity's name (PKIs made
    before named server identities recorded the default one as a plain client certificate).
    """
    names = {SERVER_IDENTITY}
    for record in read_records(pki):
        if record.kind in ("server", "client") and is_server_identity(record.common_name):
            names.add(record.common_name)
    return [SERVER_IDENTITY, *sorted(names - {SERVER_IDENTITY})]
