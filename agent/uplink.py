"""What the agent has to say, as protocol messages, queued in the outbox.

The converters of the agent (collectors read, these map, the publisher decides when to send):
each method builds one up-message with the next ``seq`` and the agent clock's ``ts``, stores it
in the outbox and tells the publisher. Nothing here touches the network.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from agent.clock import Clock
from agent.outbox import Outbox, OutboxEntry
from protocol import (
    AgentInfo,
    EquipmentInfo,
    EquipmentState,
    Event,
    Inventory,
    Reply,
    ReplyType,
    Sample,
    Severity,
    Status,
    SystemInfo,
    Telemetry,
    UpKind,
    UpMessage,
    encode,
)

__all__ = ["MAX_SAMPLES", "Uplink"]

MAX_SAMPLES = 2000  # protocol.Telemetry.samples max_length


class Uplink:
    def __init__(
        self, outbox: Outbox, device_id: str, clock: Clock, *, on_queued: Callable[[], None]
    ) -> None:
        self.outbox = outbox
        self.device_id = device_id
        self.clock = clock
        self._on_queued = on_queued

    def _queue(
        self,
        kind: UpKind,
        build: Callable[[int], UpMessage],
        *,
        retain: bool = False,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> OutboxEntry:
        if also is None:  # the plain call: tests/support/e2e.py's PublishLog wraps exactly it
            entry = self.outbox.append(kind, build, retain=retain)
        else:
            entry = self.outbox.append(kind, build, retain=retain, also=also)
        self._on_queued()
        return entry

    def event(
        self,
        event: str,
        *,
        code: str | None = None,
        severity: Severity = Severity.INFO,
        detail: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> OutboxEntry:
        """Queue an Event; ValueError (pydantic) if it does not fit the protocol."""
        return self._queue(UpKind.EVENT, self._event(event, code, severity, detail, data))

    def event_once(
        self,
        key: str,
        event: str,
        *,
        code: str | None = None,
        severity: Severity = Severity.INFO,
        detail: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> OutboxEntry | None:
        """Queue an Event unless one with the same ``key`` was ever queued (None then)."""
        entry = self.outbox.append_once(key, UpKind.EVENT, self._event(event, code, severity, detail, data))
        if entry is not None:
            self._on_queued()
        return entry

    def _event(
        self,
        event: str,
        code: str | None,
        severity: Severity,
        detail: str,
        data: Mapping[str, Any] | None,
    ) -> Callable[[int], UpMessage]:
        return lambda seq: Event(
            device_id=self.device_id,
            seq=seq,
            ts=self.clock.now(),
            event=event,
            code=code,
            severity=severity,
            detail=detail,
            data=dict(data or {}),
        )

    def _status(self, seq: int, *, online: bool, state: EquipmentState | None, reason: str) -> Status:
        return Status(
            device_id=self.device_id,
            seq=seq,
            ts=self.clock.now(),
            online=online,
            state=state if online else None,
            reason=reason[:256],
        )

    def status(self, *, online: bool, state: EquipmentState | None, reason: str) -> OutboxEntry:
        """Queue a retained Status (superseding queued ones)."""
        return self._queue(
            UpKind.STATUS,
            lambda seq: self._status(seq, online=online, state=state, reason=reason),
            retain=True,
        )

    def will(self) -> bytes:
        """The last will for the next connection: not queued (the broker holds it); its seq is
        consumed now and its ts is the connect time."""
        return encode(
            self._status(self.outbox.reserve_seq(), online=False, state=None, reason="connection lost")
        )

    def reply(
        self,
        command_id: str,
        type: ReplyType,
        *,
        reason: str = "",
        ok: bool | None = None,
        output: str = "",
        data: Mapping[str, Any] | None = None,
        chunk: int | None = None,
        progress: float | None = None,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """Queue a Reply (an :class:`agent.actions.ReplySender`); ``also`` runs in the same
        transaction (see :meth:`agent.outbox.Outbox.append`)."""
        self._queue(
            UpKind.REPLY,
            lambda seq: Reply(
                device_id=self.device_id,
                seq=seq,
                ts=self.clock.now(),
                command_id=command_id,
                type=type,
                reason=reason,
                ok=ok,
                output=output,
                data=dict(data or {}),
                chunk=chunk,
                progress=progress,
            ),
            also=also,
        )

    def telemetry(self, ts: datetime, metrics: Mapping[str, float]) -> OutboxEntry | None:
        """Queue one batch of samples taken at ``ts`` (at most MAX_SAMPLES); None if empty."""
        samples = [Sample(metric=k, value=v, ts=ts) for k, v in list(metrics.items())[:MAX_SAMPLES]]
        if not samples:
            return None
        return self._queue(
            UpKind.TELEMETRY,
            lambda seq: Telemetry(device_id=self.device_id, seq=seq, ts=ts, samples=samples),
        )

    def inventory(
        self,
        *,
        equipment: EquipmentInfo,
        system: SystemInfo,
        agent: AgentInfo,
        site: str | None,
        config: Mapping[str, Any],
    ) -> OutboxEntry:
        """Queue the retained installation profile (superseding a queued one)."""
        return self._queue(
            UpKind.INVENTORY,
            lambda seq: Inventory(
                device_id=self.device_id,
                seq=seq,
                ts=self.clock.now(),
                equipment=equipment,
                system=system,
                agent=agent,
                site=site,
                config=dict(config),
            ),
            retain=True,
        )
