"""Golden vectors: fixed messages and a signed command that agent and server must agree on.

Regenerate (only when the protocol version changes!) with
``python -m tests.protocol.vectors --write``. The vector key is derived from a public label:
it is a test fixture, never a real fleet key.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import (
    ActionInfo,
    AgentInfo,
    CommandSigner,
    EquipmentInfo,
    EquipmentState,
    Event,
    Inventory,
    PolicyDecision,
    Receipt,
    Reply,
    ReplyType,
    Sample,
    Severity,
    Status,
    SystemInfo,
    Telemetry,
    canonical_bytes,
    encode,
)

VECTORS_DIR = Path(__file__).parent / "vectors"
T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def vector_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fleetcare golden vector key").digest())


def messages() -> dict[str, Any]:
    dev = "printer-0001"
    return {
        "telemetry": Telemetry(
            device_id=dev,
            seq=41,
            ts=T0,
            samples=[
                Sample(metric="system.cpu.percent", value=12.5, ts=T0),
                Sample(metric="printer.toner.black.percent", value=63.0, ts=T0),
            ],
        ),
        "event": Event(
            device_id=dev,
            seq=42,
            ts=T0,
            event="fault.raised",
            code="PAPER_JAM",
            severity=Severity.ERROR,
            detail="Paper jam in tray 2",
            data={"effect": "down", "tray": 2},
        ),
        "status": Status(device_id=dev, seq=43, ts=T0, online=True, state=EquipmentState.RUNNING),
        "inventory": Inventory(
            device_id=dev,
            seq=44,
            ts=T0,
            equipment=EquipmentInfo(
                kind="printer", vendor="Simulated", model="SimPrint 4000", serial="SP4-0001", firmware="2.3.1"
            ),
            system=SystemInfo(
                hostname="printer-0001", os="Linux", os_version="6.1", arch="x86_64", cpu_count=2
            ),
            agent=AgentInfo(
                version="0.1.0",
                plugins=["sim-printer"],
                actions=["ping", "printer.clear_jam"],
                catalogue=[
                    ActionInfo(name="ping", description="Answer pong.", timeout=5.0),
                    ActionInfo(
                        name="printer.clear_jam",
                        disruptive=True,
                        timeout=60.0,
                        args_schema={"type": "object", "properties": {}},
                        policy=PolicyDecision.NEEDS_CONSENT,
                        windows=["mon-fri 22:00-06:00 Europe/Berlin"],
                        source="plugin sim-printer",
                    ),
                ],
                attended=True,
            ),
            site="hq-floor-2",
        ),
        "reply": Reply(
            device_id=dev,
            seq=45,
            ts=T0,
            command_id="cmd-0000000001",
            type=ReplyType.RESULT,
            ok=True,
            output="pong",
            data={"rtt_ms": 3},
        ),
    }


def receipt() -> Receipt:
    """Server → device: seqs 41-45 and 47 of printer-0001 are stored (46 is still on its way)."""
    return Receipt(device_id="printer-0001", ranges=[(41, 45), (47, 47)])


def signed_command() -> dict[str, Any]:
    key = vector_key()
    # Nonces are random by design; the vector pins one so it is reproducible.
    command = CommandSigner(key).sign(
        device_id="printer-0001",
        action="printer.clear_jam",
        args={"tray": 2, "note": "ünïcode ok"},
        issuer="alice",
        ttl=timedelta(minutes=5),
        session_id="sess-1",
        now=T0,
        command_id="cmd-0000000002",
        nonce="00112233445566778899aabbccddeeff",
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "command": json.loads(encode(command)),
        "canonical": canonical_bytes(command).decode(),
        "public_key_pem": public.decode(),
    }


def write() -> None:
    VECTORS_DIR.mkdir(exist_ok=True)
    for name, message in messages().items():
        (VECTORS_DIR / f"{name}.json").write_bytes(encode(message) + b"\n")
    (VECTORS_DIR / "receipt.json").write_bytes(encode(receipt()) + b"\n")
    (VECTORS_DIR / "command.json").write_text(
        json.dumps(signed_command(), indent=2, ensure_ascii=False) + "\n"
    )


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
        print(f"vectors written to {VECTORS_DIR}")
    else:
        print(__doc__)
