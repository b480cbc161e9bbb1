"""Command signing and verification: Ed25519 over canonical bytes.

The server signs with its command-signing key; the agent pins the public key at provisioning.
Verification order: signature (so junk never touches the replay cache), device binding, time,
then — by the caller, after its own allow-list — the replay cache.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import CommandRejected, InvalidKey, RejectReason
from protocol.messages import Command

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "MAX_COMMAND_LIFETIME",
    "CommandSigner",
    "CommandVerifier",
    "MemoryReplayCache",
    "ReplayCache",
    "canonical_bytes",
    "key_id",
    "load_private_key",
    "load_public_key",
    "new_command_id",
    "new_nonce",
]

DOMAIN = b"fleetcare-cmd-v1\n"
DEFAULT_CLOCK_SKEW = timedelta(seconds=120)
MAX_COMMAND_LIFETIME = timedelta(hours=24)


def canonical_bytes(command: Command) -> bytes:
    """Deterministic bytes covered by the signature: every field but ``sig``, sorted, compact."""
    body: dict[str, Any] = command.model_dump(mode="json", exclude={"sig"})
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return DOMAIN + text.encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"cannot load PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidKey(f"expected an Ed25519 private key, got {type(key).__name__}")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"cannot load PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidKey(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


def new_command_id() -> str:
    return secrets.token_urlsafe(16)


def new_nonce() -> str:
    return secrets.token_hex(16)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CommandSigner:
    """Builds and signs commands with the server's key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.kid = key_id(private_key.public_key())

    def sign(
        self,
        *,
        device_id: str,
        action: str,
        args: dict[str, Any] | None = None,
        issuer: str,
        ttl: timedelta,
        session_id: str | None = None,
        now: datetime | None = None,
        command_id: str | None = None,
        nonce: str | None = None,
    ) -> Command:
        issued = (now or datetime.now(UTC)).astimezone(UTC)
        unsigned = Command(
            id=command_id or new_command_id(),
            device_id=device_id,
            action=action,
            args=args or {},
            issued_at=issued,
            expires_at=issued + ttl,
            issuer=issuer,
            session_id=session_id,
            nonce=nonce or new_nonce(),
            kid=self.kid,
        )
        return unsigned.model_copy(update={"sig": _b64(self._key.sign(canonical_bytes(unsigned)))})


class ReplayCache(Protocol):
    """Remembers accepted command ids until they expire. Implementations must survive restarts
    on a real device (the agent's is SQLite-backed)."""

    def remember(self, command_id: str, expires_at: datetime) -> bool:
        """Record ``command_id``; return False if it was already there (a replay)."""
        ...


class MemoryReplayCache:
    """In-process replay cache, pruned of expired ids. For tests and the server's own checks."""

    def __init__(self) -> None:
        self._seen: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def remember(self, command_id: str, expires_at: datetime) -> bool:
        now = datetime.now(UTC)
        with self._lock:
            for stale in [cid for cid, exp in self._seen.items() if exp < now - DEFAULT_CLOCK_SKEW]:
                del self._seen[stale]
            if command_id in self._seen:
                return False
            self._seen[command_id] = expires_at
            return True


class CommandVerifier:
    """Checks a received command against the pinned server key and this device's identity."""

    def __init__(
        self,
        public_key: Ed25519PublicKey,
        device_id: str,
        *,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        max_lifetime: timedelta = MAX_COMMAND_LIFETIME,
    ) -> None:
        self._key = public_key
        self.kid = key_id(public_key)
        self.device_id = device_id
        self.clock_skew = clock_skew
        self.max_lifetime = max_lifetime

    def verify(self, command: Command, *, now: datetime | None = None) -> None:
        """Raise :class:`CommandRejected` unless signature, device binding and validity hold."""
        now = (now or datetime.now(UTC)).astimezone(UTC)

        def reject(reason: RejectReason, detail: str) -> CommandRejected:
            return CommandRejected(reason, detail, command_id=command.id, device_id=self.device_id)

        if command.kid != self.kid:
            raise reject(RejectReason.UNKNOWN_KEY, f"signed with key {command.kid}, pinned key is {self.kid}")
        try:
            self._key.verify(_unb64(command.sig), canonical_bytes(command))
        except (InvalidSignature, ValueError) as exc:
            raise reject(RejectReason.BAD_SIGNATURE, "signature does not verify") from exc
        if command.device_id != self.device_id:
            raise reject(
                RejectReason.WRONG_DEVICE, f"addressed to {command.device_id!r}, this is {self.device_id!r}"
            )
        if command.issued_at > now + self.clock_skew:
            raise reject(
                RejectReason.NOT_YET_VALID,
                f"issued_at {command.issued_at.isoformat()} is in the future (device clock {now.isoformat()})",
            )
        if command.expires_at <= now:
            raise reject(
                RejectReason.EXPIRED,
                f"expired at {command.expires_at.isoformat()} (device clock {now.isoformat()})",
            )
        if command.expires_at - command.issued_at > self.max_lifetime:
            raise reject(
                RejectReason.LIFETIME_TOO_LONG,
                f"valid for {command.expires_at - command.issued_at}, at most {self.max_lifetime} allowed",
            )

    def check_replay(self, command: Command, cache: ReplayCache) -> None:
        if not cache.remember(command.id, command.expires_at):
            raise CommandRejected(
                RejectReason.REPLAYED,
                "command id already executed",
                command_id=command.id,
                device_id=self.device_id,
            )
