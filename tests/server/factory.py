"""Protocol messages for server tests, built with the protocol package itself."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import protocol
from protocol import UpKind
from server.db.types import utcnow
from server.ingest import Decoded
from server.mqtt import InboundMessage

_seq = itertools.count(1)
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def telemetry(
    device_id: str, seq: int, value: float = 1.0, metric: str = "system.cpu.percent"
) -> protocol.Telemetry:
    return protocol.Telemetry(
        device_id=device_id, seq=seq, ts=NOW, samples=[protocol.Sample(metric=metric, value=value, ts=NOW)]
    )


def status(
    device_id: str, seq: int, *, online: bool = True, state: str | None = "running"
) -> protocol.Status:
    return protocol.Status(
        device_id=device_id,
        seq=seq,
        ts=NOW,
        online=online,
        state=protocol.EquipmentState(state) if state else None,
    )


def inventory(device_id: str, seq: int, *, model: str = "LX-9", site: str = "site-a") -> protocol.Inventory:
    return protocol.Inventory(
        device_id=device_id,
        seq=seq,
        ts=NOW,
        equipment=protocol.EquipmentInfo(
            kind="printer", vendor="acme", model=model, serial=f"SN-{device_id}"
        ),
        system=protocol.SystemInfo(hostname=device_id),
        agent=protocol.AgentInfo(version="0.1.0"),
        site=site,
    )


def event(device_id: str, seq: int, name: str = "fault.raised", **fields: Any) -> protocol.Event:
    return protocol.Event(device_id=device_id, seq=seq, ts=NOW, event=name, **fields)


def reply(device_id: str, seq: int, command_id: str, type_: str, **fields: Any) -> protocol.Reply:
    return protocol.Reply(
        device_id=device_id, seq=seq, ts=NOW, command_id=command_id, type=protocol.ReplyType(type_), **fields
    )


def decoded(message: protocol.UpMessage) -> Decoded:
    return Decoded(message, utcnow())


def inbound(
    message: protocol.UpMessage | None = None, *, topic: str | None = None, payload: bytes = b""
) -> InboundMessage:
    if message is not None:
        topic = topic or protocol.up_topic(message.device_id, UpKind(message.kind))
        payload = protocol.encode(message)
    assert topic is not None
    return InboundMessage(topic=topic, payload=payload, qos=1, mid=next(_seq), epoch=1, received_at=utcnow())
