"""The MQTT topic tree: ``fc/v1/d/{device_id}/up/{kind}`` and ``fc/v1/d/{device_id}/down/{kind}``
(``cmd``: signed commands; ``receipt``: the seqs the server has stored, docs/design.md).

The up/down split is what lets a broker ACL confine a device with two pattern lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import TopicError

__all__ = [
    "DEVICE_ID_PATTERN",
    "ROOT",
    "SERVER_SHARED_GROUP",
    "Direction",
    "DownKind",
    "ParsedTopic",
    "UpKind",
    "command_topic",
    "parse_topic",
    "receipt_topic",
    "server_subscription",
    "up_topic",
    "validate_device_id",
]

ROOT = "fc/v1/d"
SERVER_SHARED_GROUP = "fleetcare"
DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class UpKind(StrEnum):
    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"
    INVENTORY = "inventory"
    REPLY = "reply"


class DownKind(StrEnum):
    COMMAND = "cmd"
    RECEIPT = "receipt"


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    device_id: str
    direction: Direction
    kind: str  # an UpKind value for "up", a DownKind value for "down"


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` if it is safe in a topic and an ACL pattern, else raise ValueError."""
    if not DEVICE_ID_PATTERN.fullmatch(device_id) or device_id in {".", ".."}:
        raise ValueError(
            f"device id {device_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ - "
            "(no '/', '+', '#' or spaces)"
        )
    return device_id


def up_topic(device_id: str, kind: UpKind) -> str:
    return f"{ROOT}/{validate_device_id(device_id)}/up/{kind.value}"


def command_topic(device_id: str) -> str:
    return f"{ROOT}/{validate_device_id(device_id)}/down/{DownKind.COMMAND.value}"


def receipt_topic(device_id: str) -> str:
    return f"{ROOT}/{validate_device_id(device_id)}/down/{DownKind.RECEIPT.value}"


def server_subscription(shared_group: str | None = SERVER_SHARED_GROUP) -> str:
    """What the fleet server subscribes to; a shared group lets N ingest workers split the load."""
    topic = f"{ROOT}/+/up/#"
    return f"$share/{shared_group}/{topic}" if shared_group else topic


def parse_topic(topic: str) -> ParsedTopic:
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:3]) != ROOT:
        raise TopicError(topic, f"expected {ROOT}/<device_id>/(up|down)/<kind>")
    device_id, direction, kind = parts[3], parts[4], parts[5]
    try:
        validate_device_id(device_id)
    except ValueError as exc:
        raise TopicError(topic, str(exc)) from exc
    if direction == Direction.UP.value:
        if kind not in UpKind.__members__.values():
            allowed = ", ".join(k.value for k in UpKind)
            raise TopicError(topic, f"unknown up kind {kind!r} (expected one of {allowed})")
        return ParsedTopic(device_id, Direction.UP, kind)
    if direction == Direction.DOWN.value and kind in DownKind.__members__.values():
        return ParsedTopic(device_id, Direction.DOWN, kind)
    raise TopicError(topic, f"unknown direction/kind {direction}/{kind}")
