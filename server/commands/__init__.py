"""Signed commands: the service (sign, record, publish, track through the compare-and-set
state machine), their replies and files, and the policy checked before signing (policy.py)."""

from __future__ import annotations

from server.commands.service import (
    CANCELLED_REASON,
    CommandPublisher,
    CommandService,
    FetchedFile,
    StreamItem,
    apply_rejected_event,
    apply_reply,
    can_move,
    list_device_commands,
    list_replies,
    transition,
)

__all__ = [
    "CANCELLED_REASON",
    "CommandPublisher",
    "CommandService",
    "FetchedFile",
    "StreamItem",
    "apply_rejected_event",
    "apply_reply",
    "can_move",
    "list_device_commands",
    "list_replies",
    "transition",
]
