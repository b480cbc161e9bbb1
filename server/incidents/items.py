"""A device's history as the engine reads it: :class:`Item` s, placed on the server's clock.

Items come in receive order; :func:`place` gives each its position — device time corrected for
the device's clock offset (:class:`Clock`), never after its receipt — and :func:`attach_gaps`
tells each offline item how its absence ended (rebuilds only: the whole history is known).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Clock", "Item", "ItemKind", "attach_gaps", "place", "position_key"]


class ItemKind(StrEnum):
    RAISED = "fault.raised"
    CLEARED = "fault.cleared"
    STATE = "state.changed"
    MAINT_START = "maintenance.started"
    MAINT_END = "maintenance.ended"
    STARTED = "agent.started"
    ONLINE = "online"  # a Status with online=true (may carry the reported state)
    OFFLINE = "offline"  # a Status with online=false (the last will, or a goodbye)


@dataclass(slots=True)
class Item:
    """One history entry of a device. ``ts`` is the device clock, ``received`` the server's."""

    seq: int
    ts: float
    received: float
    kind: ItemKind
    code: str | None = None
    effect: str | None = None  # fault.raised: "down" | "degraded" | None (no effect)
    severity: str = "info"
    state: str | None = None  # state.changed / online: a reported state
    planned_end: float | None = None  # maintenance.started, device clock
    detail: str = ""
    # set by place() / attach_gaps():
    position: float = 0.0
    planned_at: float | None = None  # planned_end, skew-corrected
    gap_end: float | None = None  # offline: receive time of the device's return (None: not back)
    gap_restart: int | None = None  # offline: seq of the agent.started that ended the gap


def position_key(item: Item) -> tuple[float, int]:
    return (item.position, item.seq)


@dataclass(slots=True)
class Clock:
    """Device-clock offset estimate (device minus server), updated in receive order.

    ``ts - received`` is the offset minus the transit time; buffered messages have a larger
    transit, so the largest value since the device's last birth status is the best estimate
    (a birth status, sent at connect time, starts a new estimate: the clock may have been fixed).
    """

    skew: float | None = None

    def place(self, item: Item, tolerance: float) -> None:
        if item.kind is ItemKind.OFFLINE:
            item.position = item.received  # the last will carries its connect time: use arrival
            return
        offset = item.ts - item.received
        if item.kind is ItemKind.ONLINE or self.skew is None:
            self.skew = offset
        else:
            self.skew = max(self.skew, offset)
        correction = self.skew if abs(self.skew) > tolerance else 0.0
        item.position = min(item.ts - correction, item.received)
        item.planned_at = None if item.planned_end is None else item.planned_end - correction


def place(items: Iterable[Item], clock: Clock, tolerance: float) -> list[Item]:
    """Give ``items`` (in receive order) their skew-corrected positions; return them.
    Offsets within ``tolerance`` seconds are left alone."""
    placed = list(items)
    for item in placed:
        clock.place(item, tolerance)
    return placed


def attach_gaps(items: Sequence[Item]) -> None:
    """For every offline item (``items`` in receive order), record when the device came back
    (the receive time of its next other message) and which agent.started, if any, ended the gap
    (received after the offline, happened before the return)."""
    for index, item in enumerate(items):
        if item.kind is not ItemKind.OFFLINE:
            continue
        back = next((later for later in items[index + 1 :] if later.kind is not ItemKind.OFFLINE), None)
        item.gap_end = None if back is None else back.received
        item.gap_restart = None
        if back is None:
            continue
        for later in items[index + 1 :]:
            if later.kind is ItemKind.STARTED and later.position <= back.received:
                item.gap_restart = later.seq
                break
