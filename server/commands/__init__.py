"""Signed commands: the service (sign, record, publish, follow, expire: service.py), the state
machine (states.py), the device's replies (replies.py), fetched files (files.py), and the policy
checked before signing (policy.py)."""

from __future__ import annotations

from server.commands.files import FILE_FETCH, FetchedFile, assemble_file
from server.commands.replies import (
    apply_rejected_event,
    apply_reply,
    list_device_commands,
    list_replies,
    output_chunks,
    output_text,
)
from server.commands.service import (
    MAX_ARGS_BYTES,
    OVERSIZE_REASON,
    CommandPublisher,
    CommandService,
    StreamItem,
)
from server.commands.states import CANCELLED_REASON, can_move, transition

__all__ = [
    "CANCELLED_REASON",
    "FILE_FETCH",
    "MAX_ARGS_BYTES",
    "OVERSIZE_REASON",
    "CommandPublisher",
    "CommandService",
    "FetchedFile",
    "StreamItem",
    "apply_rejected_event",
    "apply_reply",
    "assemble_file",
    "can_move",
    "list_device_commands",
    "list_replies",
    "output_chunks",
    "output_text",
    "transition",
]
