"""A device's history as engine items: from a batch of fresh messages, or from the database
(``events`` and ``status_history``) for a rebuild. Both give the same items for the same
messages, so a rebuild reproduces what ingest derived.

A ``fault.raised`` gets its effect from, in order: the event's ``data.effect`` (``down``,
``degraded`` or ``none``), the device's fault catalogue (``inventory.config.faults``, sent by
the agent from its plugins), the severity (``error``/``critical``: down; otherwise none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

import protocol
from server.db.models import Device, Event, StatusRecord
from server.incidents.engine import EFFECTS, Item, ItemKind

__all__ = [
    "RELEVANT_EVENTS",
    "catalogue_of",
    "fault_effect",
    "items_from_messages",
    "load_catalogues",
    "load_items",
    "record_statuses",
]

Catalogue = Mapping[str, str]  # fault code -> "down" | "degraded" | "none"

RELEVANT_EVENTS = frozenset(
    kind.value for kind in ItemKind if kind not in (ItemKind.ONLINE, ItemKind.OFFLINE)
)
_DEFAULT_BY_SEVERITY = {"critical": "down", "error": "down"}


def catalogue_of(inventory: Mapping[str, Any] | None) -> dict[str, str]:
    """``{code: effect}`` from an inventory's ``config.faults``: a list of fault specs
    (``{"code", "meaning", "severity", "effect"}``) or a mapping ``code -> spec``."""
    config = (inventory or {}).get("config") or {}
    faults = config.get("faults") if isinstance(config, Mapping) else None
    specs: Iterable[Any]
    if isinstance(faults, Mapping):
        specs = ({"code": code, **spec} for code, spec in faults.items() if isinstance(spec, Mapping))
    elif isinstance(faults, list):
        specs = faults
    else:
        return {}
    catalogue: dict[str, str] = {}
    for spec in specs:
        if isinstance(spec, Mapping) and isinstance(spec.get("code"), str):
            effect = spec.get("effect")
            if effect in EFFECTS or effect == "none":
                catalogue[spec["code"]] = str(effect)
    return catalogue


def fault_effect(
    data: Mapping[str, Any] | None, code: str | None, severity: str, catalogue: Catalogue
) -> str | None:
    """The state a raised fault puts the device in: "down", "degraded" or None (no effect)."""
    explicit = (data or {}).get("effect")
    if explicit not in EFFECTS and explicit != "none":
        explicit = catalogue.get(code or "")
    if explicit is None:
        explicit = _DEFAULT_BY_SEVERITY.get(severity)
    return explicit if explicit in EFFECTS else None


def _epoch(value: datetime) -> float:
    return value.timestamp()


def _planned_end(data: Mapping[str, Any] | None) -> float | None:
    raw = (data or {}).get("planned_end")
    if not isinstance(raw, str):
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return None if value.tzinfo is None else value.timestamp()


def event_item(
    *,
    seq: int,
    type_: str,
    code: str | None,
    severity: str,
    ts: datetime,
    received: datetime,
    detail: str,
    data: Mapping[str, Any] | None,
    catalogue: Catalogue,
) -> Item | None:
    if type_ not in RELEVANT_EVENTS:
        return None
    kind = ItemKind(type_)
    item = Item(seq=seq, ts=_epoch(ts), received=_epoch(received), kind=kind, code=code, severity=severity)
    if kind is ItemKind.RAISED:
        item.effect = fault_effect(data, code, severity, catalogue)
        item.detail = detail
    elif kind is ItemKind.STATE:
        to = (data or {}).get("to")
        item.state = to if isinstance(to, str) else None
    elif kind is ItemKind.MAINT_START:
        item.planned_end = _planned_end(data)
    return item


def status_item(*, seq: int, ts: datetime, received: datetime, online: bool, state: str | None) -> Item:
    kind = ItemKind.ONLINE if online else ItemKind.OFFLINE
    return Item(seq=seq, ts=_epoch(ts), received=_epoch(received), kind=kind, state=state)


def items_from_messages(
    fresh: Sequence[tuple[protocol.UpMessage, datetime]], catalogues: Mapping[str, Catalogue]
) -> dict[str, list[Item]]:
    """History items of a batch, per device, in arrival order."""
    out: dict[str, list[Item]] = {}
    for message, received in fresh:
        item: Item | None = None
        if isinstance(message, protocol.Event):
            item = event_item(
                seq=message.seq,
                type_=message.event,
                code=message.code,
                severity=message.severity.value,
                ts=message.ts,
                received=received,
                detail=message.detail,
                data=message.data,
                catalogue=catalogues.get(message.device_id, {}),
            )
        elif isinstance(message, protocol.Status):
            item = status_item(
                seq=message.seq,
                ts=message.ts,
                received=received,
                online=message.online,
                state=message.state.value if message.state else None,
            )
        if item is not None:
            out.setdefault(message.device_id, []).append(item)
    for items in out.values():
        items.sort(key=lambda item: (item.received, item.seq))
    return out


async def record_statuses(
    session: AsyncSession, fresh: Sequence[tuple[protocol.UpMessage, datetime]]
) -> None:
    """Keep every status message (presence and reported state) for rebuilds."""
    rows = [
        {
            "device_id": message.device_id,
            "seq": message.seq,
            "ts": message.ts,
            "received_at": received,
            "online": message.online,
            "state": message.state.value if message.state else None,
            "reason": message.reason,
        }
        for message, received in fresh
        if isinstance(message, protocol.Status)
    ]
    if rows:
        await session.execute(insert(StatusRecord), rows)


async def load_catalogues(session: AsyncSession, device_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    ids = sorted(set(device_ids))
    if not ids:
        return {}
    rows = await session.execute(select(Device.id, Device.inventory).where(Device.id.in_(ids)))
    return {device_id: catalogue_of(inventory) for device_id, inventory in rows}


async def load_items(session: AsyncSession, device_id: str) -> list[Item]:
    """The device's whole history, in arrival order."""
    catalogue = (await load_catalogues(session, [device_id])).get(device_id, {})
    items: list[Item] = []
    events = await session.execute(
        select(
            Event.seq,
            Event.type,
            Event.code,
            Event.severity,
            Event.ts,
            Event.received_at,
            Event.detail,
            Event.data,
        ).where(Event.device_id == device_id, Event.type.in_(sorted(RELEVANT_EVENTS)))
    )
    for seq, type_, code, severity, ts, received, detail, data in events:
        item = event_item(
            seq=seq,
            type_=type_,
            code=code,
            severity=severity,
            ts=ts,
            received=received,
            detail=detail,
            data=data,
            catalogue=catalogue,
        )
        if item is not None:
            items.append(item)
    statuses = await session.execute(
        select(
            StatusRecord.seq,
            StatusRecord.ts,
            StatusRecord.received_at,
            StatusRecord.online,
            StatusRecord.state,
        ).where(StatusRecord.device_id == device_id)
    )
    items.extend(
        status_item(seq=seq, ts=ts, received=received, online=online, state=state)
        for seq, ts, received, online, state in statuses
    )
    items.sort(key=lambda item: (item.received, item.seq))
    return items
