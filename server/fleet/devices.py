"""Device queries: the fleet list, one device, its telemetry and events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from server.db.models import Device, Event, TelemetrySample
from server.errors import NotFound

__all__ = [
    "DeviceFilter",
    "escape_like",
    "get_device",
    "list_devices",
    "list_events",
    "list_telemetry",
    "placement_conditions",
]


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    online: bool | None = None
    model: str | None = None
    site: str | None = None
    q: str | None = None  # substring of id, serial, model or site


def escape_like(text: str) -> str:
    """``text`` for a ``LIKE … ESCAPE '\\'`` pattern: its ``%``, ``_`` and backslashes match
    themselves, so a search for "50%" is not a wildcard. Public for every substring search over
    devices (the API's list and the console's fleet table)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def placement_conditions(
    customer_id: int | None, site_id: int | None, model: str | None
) -> list[ColumnElement[bool]]:
    """The SQL conditions over ``Device`` of the filters every list of devices, incidents and
    sessions shares (a customer, a site, a model; None or empty: any)."""
    conditions: list[ColumnElement[bool]] = []
    if customer_id is not None:
        conditions.append(Device.customer_id == customer_id)
    if site_id is not None:
        conditions.append(Device.site_id == site_id)
    if model:
        conditions.append(Device.model == model)
    return conditions


async def list_devices(
    session: AsyncSession,
    where: DeviceFilter,
    *,
    limit: int = 100,
    offset: int = 0,
    scope: ColumnElement[bool] | None = None,
) -> tuple[list[Device], int]:
    """``scope``: the caller's device condition (``server.base.access.device_condition``)."""
    conditions: list[ColumnElement[bool]] = [] if scope is None else [scope]
    if where.online is not None:
        conditions.append(Device.online.is_(where.online))
    if where.model is not None:
        conditions.append(Device.model == where.model)
    if where.site is not None:
        conditions.append(Device.site == where.site)
    if where.q:
        pattern = f"%{escape_like(where.q.lower())}%"
        conditions.append(
            or_(
                *(
                    func.lower(column).like(pattern, escape="\\")
                    for column in (Device.id, Device.serial, Device.model, Device.site)
                )
            )
        )
    total = await session.scalar(select(func.count()).select_from(Device).where(*conditions))
    rows = await session.scalars(
        select(Device).where(*conditions).order_by(Device.id).limit(limit).offset(offset)
    )
    return list(rows), total or 0


async def get_device(session: AsyncSession, device_id: str) -> Device:
    device = await session.get(Device, device_id)
    if device is None:
        raise NotFound("device", device_id)
    return device


async def list_telemetry(
    session: AsyncSession,
    device_id: str,
    *,
    metric: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> list[TelemetrySample]:
    """Samples of one device in [since, until), newest first."""
    await get_device(session, device_id)
    conditions: list[ColumnElement[bool]] = [TelemetrySample.device_id == device_id]
    if metric is not None:
        conditions.append(TelemetrySample.metric == metric)
    if since is not None:
        conditions.append(TelemetrySample.ts >= since)
    if until is not None:
        conditions.append(TelemetrySample.ts < until)
    rows = await session.scalars(
        select(TelemetrySample)
        .where(*conditions)
        .order_by(TelemetrySample.ts.desc(), TelemetrySample.id.desc())
        .limit(limit)
    )
    return list(rows)


async def list_events(
    session: AsyncSession,
    device_id: str,
    *,
    type_: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Event], int]:
    """Events of one device in [since, until), newest first, and the total count."""
    await get_device(session, device_id)
    conditions: list[ColumnElement[bool]] = [Event.device_id == device_id]
    if type_ is not None:
        conditions.append(Event.type == type_)
    if since is not None:
        conditions.append(Event.ts >= since)
    if until is not None:
        conditions.append(Event.ts < until)
    total = await session.scalar(select(func.count()).select_from(Event).where(*conditions))
    rows = await session.scalars(
        select(Event)
        .where(*conditions)
        .order_by(Event.ts.desc(), Event.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total or 0
