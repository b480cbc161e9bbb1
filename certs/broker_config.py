"""Mosquitto (2.0.x) configuration for the fleet: one mutual-TLS listener and the fleet ACL.

Identity: every client presents a certificate from the fleet CA; ``use_identity_as_username``
makes its CN (device id, or a server identity) the username the ACL sees as ``%u``, and
``use_username_as_clientid`` makes it the client id as well, whatever the client asked for: a
certificate can no longer connect under another device's (or the server's) client id and knock
that client off the broker. The ACL (:mod:`certs.acl`):

    denied identities    deny everything (revoked or retired)
    server identities    read fc/v1/d/+/up/#    write fc/v1/d/+/down/#
    every device         write fc/v1/d/%u/up/#  read  fc/v1/d/%u/down/#

The broker writes its pid to ``<out_dir>/mosquitto.pid`` so that revocation can reload it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
from pathlib import Path

from certs.acl import AclChange, acl_text, update_acl
from certs.errors import PkiError
from certs.revocation import pki_denied
from certs.store import PkiDir, issued_server_identities, write_file

__all__ = ["DEFAULT_MAX_PACKET_SIZE", "PID_FILE_NAME", "acl_text", "refresh_acl", "write_mosquitto_config"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PACKET_SIZE = 1024 * 1024
"""Four times protocol.codec.MAX_PAYLOAD_BYTES: a ceiling no honest client reaches."""


PID_FILE_NAME = "mosquitto.pid"


def refresh_acl(pki: PkiDir, acl_path: Path, *, create: bool = False) -> AclChange:
    """Rewrite the ACL file from the PKI: grants for every issued server identity that is not
    revoked, deny entries for every revoked identity; the fleet server's deny entries are kept."""
    denied = pki_denied(pki)
    revoked = {entry.identity for entry in denied}
    servers = [name for name in issued_server_identities(pki) if name not in revoked]
    return update_acl(acl_path, source="certs", denied=denied, server_identities=servers, create=create)


def _default_run_as_user() -> str | None:
    # Mosquitto started as root drops to user "mosquitto", which cannot read root's 0600 keys.
    if os.geteuid() == 0:
        return pwd.getpwuid(0).pw_name
    return None


def _config_path(path: Path) -> str:
    text = str(path.absolute())
    if any(ch.isspace() for ch in text):
        # Mosquitto splits option values on whitespace: such a path cannot be written.
        raise PkiError(f"path {text!r} contains whitespace, which mosquitto.conf cannot express")
    return text


def _check_readable_by(user: str, pki: PkiDir) -> None:
    """Warn when the account Mosquitto switches to cannot reach the broker key: it would not start."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        logger.warning("mosquitto is told to run as %s, which does not exist here", user)
        return
    if account.pw_uid == 0:
        return
    groups = {account.pw_gid, *os.getgrouplist(user, account.pw_gid)}
    for path, bits in ((pki.root, 0o1), (pki.broker_key, 0o4)):
        try:
            st = path.stat()
        except OSError:
            return
        if st.st_uid == account.pw_uid:
            allowed = bool(st.st_mode & (bits << 6))
        elif st.st_gid in groups:
            allowed = bool(st.st_mode & (bits << 3))
        else:
            allowed = bool(st.st_mode & bits)
        if not allowed:
            logger.warning(
                "mosquitto will run as %s, which cannot %s %s (uid %d, mode %o): it will fail to start; "
                "install the broker files for that account (docs/pki.md)",
                user,
                "enter" if bits == 0o1 else "read",
                path,
                st.st_uid,
                st.st_mode & 0o777,
            )
            return


def write_mosquitto_config(
    pki: PkiDir,
    out_dir: Path,
    *,
    port: int = 8883,
    bind: str = "127.0.0.1",
    persistence_dir: Path | None = None,
    run_as_user: str | None = None,
    max_queued_messages: int = 100000,
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
) -> Path:
    """Write ``out_dir/mosquitto.conf`` and ``out_dir/acl``; return the path of mosquitto.conf.

    ``run_as_user`` becomes Mosquitto's ``user`` line; by default, when running as root, root
    itself, so the broker can read the root-owned 0600 broker key (see docs/pki.md for a
    dedicated ``mosquitto`` user). Paths are written absolute.
    """
    if not 0 < port < 65536:
        raise PkiError(f"invalid port {port}: expected 1-65535")
    if not bind or any(ch.isspace() for ch in bind):
        raise PkiError(f"invalid bind address {bind!r}")
    user = run_as_user if run_as_user is not None else _default_run_as_user()
    if user is not None and (not user or any(ch.isspace() for ch in user)):
        raise PkiError(f"invalid run_as_user {user!r}")
    if max_queued_messages < 0 or max_packet_size < 1:
        raise PkiError("max_queued_messages must be >= 0 and max_packet_size >= 1")

    conf_path, acl_path = out_dir / "mosquitto.conf", out_dir / "acl"
    paths = {
        "pid_file": _config_path(out_dir / PID_FILE_NAME),
        "acl_file": _config_path(acl_path),
        "cafile": _config_path(pki.ca_cert),
        "certfile": _config_path(pki.broker_cert),
        "keyfile": _config_path(pki.broker_key),
        "crlfile": _config_path(pki.crl),
    }
    if persistence_dir is not None:
        paths["persistence_location"] = _config_path(persistence_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Atomic replacement: a broker reloading (SIGHUP) meanwhile never reads half a file. The
    # fleet server's deny entries in an existing ACL survive the regeneration.
    refresh_acl(pki, acl_path, create=True)

    lines = [
        "# fleetcare Mosquitto configuration. Generated by `fleetcare certs broker-config`;",
        "# regenerate rather than edit. Mosquitto 2.0.x.",
        "",
        "# One set of security settings for the whole broker; no anonymous clients at all.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {paths['acl_file']}",
        "",
        "# Where the broker writes its pid: `fleetcare certs revoke` and the fleet server send",
        "# SIGHUP to it after changing the ACL or the CRL.",
        f"pid_file {paths['pid_file']}",
        "",
        "# Sessions and queues: the server keeps a persistent session, so the broker queues",
        "# device messages while it restarts.",
    ]
    if persistence_dir is not None:
        if not persistence_dir.exists():
            persistence_dir.mkdir(mode=0o700, parents=True)
            if user is not None and os.geteuid() == 0:
                with contextlib.suppress(KeyError):
                    os.chown(persistence_dir, pwd.getpwnam(user).pw_uid, -1)
        lines += [
            "persistence true",
            # Mosquitto appends the file name to this string: the trailing slash matters.
            f"persistence_location {paths['persistence_location']}/",
            "autosave_interval 60",
        ]
    else:
        lines.append("persistence false")
    lines += [
        f"max_queued_messages {max_queued_messages}",
        "max_inflight_messages 100",
        f"max_packet_size {max_packet_size}",
        "persistent_client_expiration 30d",
        "set_tcp_nodelay true",
        "",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if user is not None:
        lines += ["", "# The account Mosquitto switches to when started as root.", f"user {user}"]
        _check_readable_by(user, pki)
    lines += [
        "",
        "# Mutual TLS: a client certificate from the fleet CA is required; its CN is the username",
        "# and the client id (a client cannot take over another's client id).",
        f"listener {port} {bind}",
        "protocol mqtt",
        f"cafile {paths['cafile']}",
        f"certfile {paths['certfile']}",
        f"keyfile {paths['keyfile']}",
        f"crlfile {paths['crlfile']}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "",
    ]
    write_file(conf_path, "\n".join(lines).encode(), private=False, overwrite=True)
    return conf_path
