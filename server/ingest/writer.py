"""The batched idempotent writer: one transaction per batch of decoded up-messages.

1. ``INSERT INTO messages … ON CONFLICT DO NOTHING RETURNING device_id, seq`` tells which
   messages are new; redeliveries are counted as duplicates and go no further.
2. Devices seen for the first time are registered (the broker already authenticated them).
3. The new messages are applied in arrival order: status, inventory, telemetry, events,
   command replies.
4. The caller commits, then acknowledges the MQTT messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, bindparam, case, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from server import commands, customers
from server.db.dialect import insert_ignore
from server.db.models import Device, Event, Message, QuarantinedMessage, TelemetrySample
from server.sessions import service as sessions

if TYPE_CHECKING:
    from server.incidents import IncidentTracker

__all__ = ["BatchOutcome", "BatchWriter", "Decoded", "Quarantined", "write_batch"]

# The hot path uses Core tables (executemany, cached statements), not ORM bulk operations.
MESSAGES: Table = Message.__table__  # type: ignore[assignment]
DEVICES: Table = Device.__table__  # type: ignore[assignment]
TELEMETRY: Table = TelemetrySample.__table__  # type: ignore[assignment]
EVENTS: Table = Event.__table__  # type: ignore[assignment]
QUARANTINE: Table = QuarantinedMessage.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded message, with the topic and bytes it came as (empty when built in code), so
    that a message whose handling fails can be quarantined as it was received."""

    message: protocol.UpMessage
    received_at: datetime
    topic: str = ""
    payload: bytes = b""

    @property
    def key(self) -> tuple[str, int]:
        return self.message.device_id, self.message.seq


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A message kept out of the ingest path with why (a row of ``quarantined_messages``)."""

    received_at: datetime
    topic: str
    device_id: str | None
    seq: int | None
    payload: bytes
    error: str  # exception class
    reason: str

    def row(self) -> dict[str, Any]:
        return {
            "received_at": self.received_at,
            "topic": self.topic[:256],  # the columns' sizes: MQTT topics may be longer
            "device_id": self.device_id[:64] if self.device_id else None,
            "seq": self.seq,
            "payload": self.payload,
            "error": self.error[:256],
            "reason": self.reason,
        }


@dataclass(slots=True)
class BatchOutcome:
    stored: int = 0
    duplicates: int = 0
    commands: set[str] = field(default_factory=set)  # command ids whose state may have changed


async def _apply_status(session: AsyncSession, item: Decoded, status: protocol.Status) -> None:
    values: dict[str, Any] = {
        "online": status.online,
        "status_changed_at": case(
            (
                or_(Device.online.is_not(status.online), Device.status_changed_at.is_(None)),
                item.received_at,
            ),
            else_=Device.status_changed_at,
        ),
    }
    if status.state is not None:
        values["state"] = status.state.value
    await session.execute(update(Device).where(Device.id == status.device_id).values(**values))


async def _apply_inventory(session: AsyncSession, inventory: protocol.Inventory) -> None:
    equipment = inventory.equipment
    await session.execute(
        update(Device)
        .where(Device.id == inventory.device_id)
        .values(
            inventory=inventory.model_dump(mode="json", exclude={"v", "kind", "device_id"}),
            model=equipment.model or None,
            serial=equipment.serial or None,
            firmware=equipment.firmware or None,
            site=inventory.site,
        )
    )


async def _claim(session: AsyncSession, items: Sequence[Decoded], outcome: BatchOutcome) -> list[Decoded]:
    """Record the message keys; return the items never stored before, in arrival order."""
    unique: dict[tuple[str, int], Decoded] = {}
    for item in items:
        if item.key in unique:
            outcome.duplicates += 1
        else:
            unique[item.key] = item
    if not unique:
        return []
    # Core executemany ("insertmanyvalues"): SQLAlchemy batches the rows into multi-row
    # INSERTs with one cached compiled statement; RETURNING lists only the rows inserted.
    result = await session.execute(
        insert_ignore(session, MESSAGES).returning(MESSAGES.c.device_id, MESSAGES.c.seq),
        [
            {
                "device_id": item.message.device_id,
                "seq": item.message.seq,
                "kind": item.message.kind,
                "ts": item.message.ts,
                "received_at": item.received_at,
            }
            for item in unique.values()
        ],
    )
    new_keys = {(device_id, seq) for device_id, seq in result}
    fresh = [item for key, item in unique.items() if key in new_keys]
    outcome.duplicates += len(unique) - len(fresh)
    outcome.stored = len(fresh)
    return fresh


async def _register_devices(session: AsyncSession, fresh: Sequence[Decoded]) -> dict[str, datetime]:
    """Register unknown devices; return, per device, the latest receive time of a message that
    shows it alive (everything but an offline status, which may be the broker's last will)."""
    first_seen: dict[str, datetime] = {}
    last_seen: dict[str, datetime] = {}
    for item in fresh:
        device_id = item.message.device_id
        first_seen.setdefault(device_id, item.received_at)
        if not (isinstance(item.message, protocol.Status) and not item.message.online):
            last_seen[device_id] = max(item.received_at, last_seen.get(device_id, item.received_at))
    await session.execute(
        insert_ignore(session, DEVICES),
        [{"id": device_id, "first_seen": ts, "online": False} for device_id, ts in first_seen.items()],
    )
    return last_seen


def _event_row(item: Decoded, event: protocol.Event) -> dict[str, Any]:
    return {
        "device_id": event.device_id,
        "seq": event.seq,
        "type": event.event,
        "code": event.code,
        "severity": event.severity.value,
        "ts": event.ts,
        "received_at": item.received_at,
        "detail": event.detail,
        "data": event.data,
    }


async def _apply_event(session: AsyncSession, item: Decoded, event: protocol.Event) -> str | None:
    """Events that move something else: a rejected command, a session's consent."""
    if event.event == "command.rejected":
        return await commands.apply_rejected_event(session, event.device_id, event, item.received_at)
    if event.event in sessions.CONSENT_EVENTS:  # the local operator's answer (server/sessions)
        await sessions.apply_consent_event(session, event.device_id, event, item.received_at)
    return None


async def write_batch(
    session: AsyncSession, items: Sequence[Decoded], *, incidents: IncidentTracker | None = None
) -> BatchOutcome:
    """Apply ``items`` in the session's transaction (no commit). With ``incidents``, the new
    messages also update state intervals and incidents (server/incidents), in the same
    transaction."""
    outcome = BatchOutcome()
    fresh = await _claim(session, items, outcome)
    if not fresh:
        return outcome
    last_seen = await _register_devices(session, fresh)

    samples: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for item in fresh:
        message = item.message
        changed: str | None = None
        if isinstance(message, protocol.Telemetry):
            samples.extend(
                {"device_id": message.device_id, "metric": s.metric, "ts": s.ts, "value": s.value}
                for s in message.samples
            )
        elif isinstance(message, protocol.Status):
            await _apply_status(session, item, message)
        elif isinstance(message, protocol.Inventory):
            await _apply_inventory(session, message)
        elif isinstance(message, protocol.Event):
            events.append(_event_row(item, message))
            changed = await _apply_event(session, item, message)
        elif isinstance(message, protocol.Reply):
            changed = await commands.apply_reply(session, message.device_id, message, item.received_at)
        if changed:
            outcome.commands.add(changed)
    if samples:
        await session.execute(insert(TELEMETRY), samples)
    if events:
        await session.execute(insert(EVENTS), events)
    if last_seen:
        await session.execute(
            update(DEVICES)
            .where(
                DEVICES.c.id == bindparam("device"),
                or_(DEVICES.c.last_seen.is_(None), DEVICES.c.last_seen < bindparam("seen")),
            )
            .values(last_seen=bindparam("seen")),
            [{"device": device_id, "seen": ts} for device_id, ts in last_seen.items()],
        )
    await _assign_sites(session, fresh)
    await _derive(session, fresh, incidents)
    return outcome


async def _assign_sites(session: AsyncSession, fresh: Sequence[Decoded]) -> None:
    """The inventory step's second half: a device reporting a site is assigned to it (when the
    name is unambiguous: server/customers), as of when its newest inventory was received."""
    inventoried: dict[str, datetime] = {}
    for item in fresh:
        message = item.message
        if isinstance(message, protocol.Inventory) and message.site:
            inventoried[message.device_id] = max(
                item.received_at, inventoried.get(message.device_id, item.received_at)
            )
    if inventoried:
        await customers.assign_sites_from_inventory(session, inventoried)


async def _derive(session: AsyncSession, fresh: Sequence[Decoded], incidents: IncidentTracker | None) -> None:
    """States and incidents (server/incidents), once everything above is written."""
    if incidents is not None:
        await incidents.on_batch(session, [(item.message, item.received_at) for item in fresh])


class BatchWriter:
    """:func:`write_batch` in its own transaction, committed."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, incidents: IncidentTracker | None = None
    ) -> None:
        self._sessions = sessions
        self._incidents = incidents

    async def write(self, items: Sequence[Decoded]) -> BatchOutcome:
        async with self._sessions() as session:
            outcome = await write_batch(session, items, incidents=self._incidents)
            await session.commit()
            return outcome

    async def quarantine(self, items: Sequence[Quarantined]) -> None:
        """Keep messages that could not be handled, in their own transaction, committed."""
        async with self._sessions() as session:
            await session.execute(insert(QUARANTINE), [item.row() for item in items])
            await session.commit()

    async def refused_devices(self) -> dict[str, str]:
        """Devices whose messages are refused, with why: ``revoked`` (certificate revoked) or
        ``retired`` (decommissioned). Few rows; read whole, every second or so, by the consumer."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(DEVICES.c.id, DEVICES.c.revoked_at.is_not(None)).where(
                    or_(DEVICES.c.revoked_at.is_not(None), DEVICES.c.decommissioned_at.is_not(None))
                )
            )
            return {device_id: "revoked" if revoked else "retired" for device_id, revoked in rows}
