"""A command's stream as Server-Sent Events text: one :class:`StreamItem` → one event.

The wire format of ``GET /api/v1/commands/{id}/stream`` and of the console's
``/commands/{id}/stream`` (a browser's EventSource cannot send a bearer token), which must not
differ: ``id`` is the reply's device_seq (so ``Last-Event-ID`` resumes), ``event`` its type,
``data`` compact JSON; a keepalive is a comment line.
"""

from __future__ import annotations

import json

from server.commands.service import StreamItem

__all__ = ["event_text"]


def event_text(item: StreamItem) -> str:
    """The SSE text of one item, blank line included."""
    if item.event == "keepalive":
        return ": keepalive\n\n"
    head = f"id: {item.seq}\n" if item.seq is not None else ""
    return f"{head}event: {item.event}\ndata: {json.dumps(item.data, separators=(',', ':'), default=str)}\n\n"
