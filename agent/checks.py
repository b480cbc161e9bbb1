"""Pre-flight checks of an agent configuration (``fleetcare agent check-config``).

Everything that would otherwise surface as a confusing connection failure at 3 a.m.: files
exist and are readable, the private key is not readable by others, the certificate is ours
(CN = device_id), matches the key, is currently valid and was issued by the configured CA,
the pinned command key loads, the data directory is writable, plugins are installed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from agent.config import AgentSettings
from agent.plugins import available_plugins
from protocol import InvalidKey, load_public_key

__all__ = ["Problem", "check_settings"]


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    problem: str
    fix: str
    warning: bool = False  # worth knowing, but the agent can run

    def __str__(self) -> str:
        prefix = "warning: " if self.warning else ""
        return f"{prefix}{self.field}: {self.problem} — fix: {self.fix}"


def _readable(field: str, path: Path, problems: list[Problem]) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        problems.append(Problem(field, f"{path} does not exist", "correct the path or provision the file"))
    except IsADirectoryError:
        problems.append(Problem(field, f"{path} is a directory", "point it at the file itself"))
    except PermissionError:
        problems.append(
            Problem(field, f"{path} is not readable by this user", "chown/chmod it for the agent's user")
        )
    except OSError as exc:
        problems.append(Problem(field, f"cannot read {path}: {exc.strerror}", "check the file system"))
    return None


def _load_cert(field: str, pem: bytes | None, fix: str, problems: list[Problem]) -> x509.Certificate | None:
    if pem is None:
        return None
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        problems.append(Problem(field, f"not a PEM certificate ({exc})", fix))
        return None


def _check_cert(
    settings: AgentSettings, cert: x509.Certificate, ca: x509.Certificate | None, problems: list[Problem]
) -> None:
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [settings.device_id]:
        problems.append(
            Problem(
                "tls.cert_file",
                f"certificate CN is {cns[0] if cns else 'missing'!r}, device_id is {settings.device_id!r}",
                "issue a certificate for this device id (fleetcare certs device <id>) or fix device_id",
            )
        )
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        problems.append(
            Problem(
                "tls.cert_file",
                f"certificate valid {cert.not_valid_before_utc:%Y-%m-%d} to "
                f"{cert.not_valid_after_utc:%Y-%m-%d}, not now ({now:%Y-%m-%d})",
                "renew the certificate, or set the device clock",
            )
        )
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            problems.append(
                Problem(
                    "tls.cert_file",
                    f"not issued by the CA in tls.ca_file ({type(exc).__name__})",
                    "use the fleet CA that signed this device's certificate",
                )
            )


def _check_key(
    key_file: Path, key_pem: bytes, cert: x509.Certificate | None, problems: list[Problem]
) -> None:
    mode = key_file.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        problems.append(
            Problem(
                "tls.key_file",
                f"{key_file} is accessible by group/others (mode {stat.filemode(mode)})",
                f"chmod 600 {key_file}",
            )
        )
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        problems.append(
            Problem("tls.key_file", f"not an unencrypted PEM private key ({exc})", "re-provision")
        )
        return
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert is not None and key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(
        der, spki
    ):
        problems.append(Problem("tls.key_file", "does not match the certificate", "install the matching key"))


def _check_tls(settings: AgentSettings, problems: list[Problem]) -> None:
    tls = settings.tls
    if tls is None:
        if settings.broker.allow_plaintext:
            problems.append(
                Problem("tls", "not set: the agent connects WITHOUT TLS", "configure tls for a real device")
            )
        return
    ca_pem = _readable("tls.ca_file", Path(tls.ca_file), problems)
    cert_pem = _readable("tls.cert_file", Path(tls.cert_file), problems)
    key_pem = _readable("tls.key_file", Path(tls.key_file), problems)
    cert = _load_cert("tls.cert_file", cert_pem, "provision the device certificate", problems)
    ca = _load_cert("tls.ca_file", ca_pem, "install the fleet CA certificate", problems)
    if cert is not None:
        _check_cert(settings, cert, ca, problems)
    if key_pem is not None:
        _check_key(Path(tls.key_file), key_pem, cert, problems)


def check_settings(settings: AgentSettings) -> list[Problem]:
    """Every problem found, in config order; empty when the agent should be able to start."""
    problems: list[Problem] = []
    _check_tls(settings, problems)

    pem = _readable("server_key_file", Path(settings.server_key_file), problems)
    if pem is not None:
        try:
            load_public_key(pem)
        except InvalidKey as exc:
            problems.append(
                Problem("server_key_file", str(exc), "install the fleet's signing.pub (Ed25519 public key)")
            )

    data_dir = Path(settings.data_dir)
    probe = data_dir if data_dir.exists() else next((p for p in data_dir.parents if p.exists()), Path("/"))
    if data_dir.exists() and not data_dir.is_dir():
        problems.append(
            Problem("data_dir", f"{data_dir} is not a directory", "point data_dir at a directory")
        )
    elif not os.access(probe, os.W_OK | os.X_OK):
        problems.append(
            Problem(
                "data_dir",
                f"{probe} is not writable by this user",
                f"create {data_dir} owned by the agent's user",
            )
        )

    installed = available_plugins()
    for index, plugin in enumerate(settings.plugins):
        if plugin.name not in installed:
            problems.append(
                Problem(
                    f"plugins.{index}.name",
                    f"plugin {plugin.name!r} is not installed (have: {', '.join(sorted(installed)) or 'none'})",
                    "pip install the package providing it",
                )
            )
    for index, path in enumerate(settings.policy.log_paths):
        if not Path(path).exists():
            problems.append(
                Problem(
                    f"policy.log_paths.{index}",
                    f"{path} does not exist (yet)",
                    "fix the path or remove it",
                    warning=True,
                )
            )
    return problems
