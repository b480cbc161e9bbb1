"""Agent and server can never drift apart: both sides must reproduce the checked-in bytes."""

from __future__ import annotations

import json

import pytest

from protocol import (
    CommandVerifier,
    UpKind,
    canonical_bytes,
    decode,
    decode_command,
    decode_receipt,
    decode_uplink,
    encode,
    load_public_key,
    up_topic,
)
from tests.protocol import vectors

KINDS = [UpKind.TELEMETRY, UpKind.EVENT, UpKind.STATUS, UpKind.INVENTORY, UpKind.REPLY]


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_message_vector_decodes_and_reencodes_byte_for_byte(kind: UpKind) -> None:
    stored = (vectors.VECTORS_DIR / f"{kind.value}.json").read_bytes().rstrip(b"\n")
    message = decode(kind, stored)
    assert encode(message) == stored
    assert encode(vectors.messages()[kind.value]) == stored
    assert decode_uplink(up_topic(message.device_id, kind), stored) == message


def test_command_vector_canonical_bytes_and_signature_match() -> None:
    stored = json.loads((vectors.VECTORS_DIR / "command.json").read_text())
    command = decode_command(json.dumps(stored["command"]).encode())
    assert canonical_bytes(command).decode() == stored["canonical"]
    public_key = load_public_key(stored["public_key_pem"].encode())
    verifier = CommandVerifier(public_key, "printer-0001")
    verifier.verify(command, now=command.issued_at)
    assert vectors.signed_command() == stored


def test_receipt_vector_decodes_and_reencodes_byte_for_byte() -> None:
    stored = (vectors.VECTORS_DIR / "receipt.json").read_bytes().rstrip(b"\n")
    receipt = decode_receipt(stored)
    assert encode(receipt) == stored == encode(vectors.receipt())
    assert receipt.seqs() == 6
