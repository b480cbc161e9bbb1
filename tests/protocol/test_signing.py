from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import (
    Command,
    CommandRejected,
    CommandSigner,
    CommandVerifier,
    InvalidKey,
    MemoryReplayCache,
    RejectReason,
    decode_command,
    encode,
    load_private_key,
    load_public_key,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
SIGNER = CommandSigner(KEY)


def _command(**kw: object) -> Command:
    params: dict[str, object] = {
        "device_id": "dev-1",
        "action": "ping",
        "issuer": "alice",
        "ttl": timedelta(minutes=5),
        "now": NOW,
    }
    params.update(kw)
    return SIGNER.sign(**params)  # type: ignore[arg-type]


def _verifier(device_id: str = "dev-1") -> CommandVerifier:
    return CommandVerifier(KEY.public_key(), device_id)


def _rejected(
    command: Command, *, now: datetime = NOW, verifier: CommandVerifier | None = None
) -> RejectReason:
    with pytest.raises(CommandRejected) as info:
        (verifier or _verifier()).verify(command, now=now)
    assert info.value.command_id == command.id
    return info.value.reason


def test_valid_command_verifies_after_wire_round_trip() -> None:
    command = decode_command(encode(_command(args={"lines": 10, "path": "/var/log/x"})))
    _verifier().verify(command, now=NOW + timedelta(seconds=1))


def test_command_signed_by_another_key_is_rejected_as_unknown_key() -> None:
    forged = CommandSigner(Ed25519PrivateKey.generate()).sign(
        device_id="dev-1", action="ping", issuer="mallory", ttl=timedelta(minutes=5), now=NOW
    )
    assert _rejected(forged) is RejectReason.UNKNOWN_KEY


def test_forged_command_claiming_the_pinned_kid_fails_signature() -> None:
    forged = CommandSigner(Ed25519PrivateKey.generate()).sign(
        device_id="dev-1", action="ping", issuer="mallory", ttl=timedelta(minutes=5), now=NOW
    )
    forged = forged.model_copy(update={"kid": SIGNER.kid})
    assert _rejected(forged) is RejectReason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("action", "logs.tail"),
        ("args", {"path": "/etc/shadow"}),
        ("device_id", "dev-2"),
        ("issuer", "root"),
        ("expires_at", NOW + timedelta(hours=1)),
        ("session_id", "other"),
        ("nonce", "f" * 32),
        ("id", "another-id-123"),
    ],
)
def test_tampering_with_any_signed_field_breaks_the_signature(field: str, value: object) -> None:
    tampered = _command().model_copy(update={field: value})
    assert _rejected(tampered) is RejectReason.BAD_SIGNATURE


def test_garbage_signature_is_rejected() -> None:
    assert _rejected(_command().model_copy(update={"sig": "!!!not base64"})) is RejectReason.BAD_SIGNATURE


def test_command_for_another_device_is_rejected() -> None:
    assert _rejected(_command(device_id="dev-2")) is RejectReason.WRONG_DEVICE


def test_expired_command_is_rejected() -> None:
    assert _rejected(_command(), now=NOW + timedelta(minutes=5)) is RejectReason.EXPIRED


def test_command_from_the_future_beyond_skew_is_rejected() -> None:
    verifier = _verifier()
    assert (
        _rejected(_command(), now=NOW - verifier.clock_skew - timedelta(seconds=1))
        is RejectReason.NOT_YET_VALID
    )
    verifier.verify(_command(), now=NOW - verifier.clock_skew + timedelta(seconds=1))


def test_overlong_validity_is_rejected() -> None:
    assert _rejected(_command(ttl=timedelta(days=2))) is RejectReason.LIFETIME_TOO_LONG


def test_replay_cache_rejects_second_use() -> None:
    cache = MemoryReplayCache()
    command = _command(now=datetime.now(UTC))
    verifier = _verifier()
    verifier.check_replay(command, cache)
    with pytest.raises(CommandRejected) as info:
        verifier.check_replay(command, cache)
    assert info.value.reason is RejectReason.REPLAYED


def test_memory_replay_cache_forgets_long_expired_ids() -> None:
    cache = MemoryReplayCache()
    assert cache.remember("old", datetime.now(UTC) - timedelta(hours=1))
    assert cache.remember("new", datetime.now(UTC) + timedelta(hours=1))
    assert cache.remember("old", datetime.now(UTC) - timedelta(hours=1))  # pruned, so "new" to the cache
    assert not cache.remember("new", datetime.now(UTC) + timedelta(hours=1))


def test_keys_load_from_pem_and_wrong_key_types_are_named() -> None:
    pem = KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert CommandSigner(load_private_key(pem)).kid == SIGNER.kid
    pub = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert CommandVerifier(load_public_key(pub), "d").kid == SIGNER.kid
    with pytest.raises(InvalidKey, match="public"):
        load_public_key(b"nonsense")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(InvalidKey, match="expected an Ed25519 private key"):
        load_private_key(ec_pem)


def test_signature_survives_json_reordering() -> None:
    wire = json.loads(encode(_command(args={"b": 1, "a": [1, 2, {"z": None}]})))
    reordered = json.dumps(dict(reversed(list(wire.items())))).encode()
    _verifier().verify(decode_command(reordered), now=NOW)
