"""The console's own read queries: the fleet table (one SQL statement: filter, sort and page in
the database, the total by a window function) and the dashboard's open incidents by priority.
Both take the caller's device condition from ``server.base.access``.

*Consumables at risk* in the fleet table: per device, the consumables (event codes) with a
``consumable.low`` event not yet cleared — no ``maintenance.ended`` event of the device after
it (replacing a consumable is maintenance; the agent reports both). Read from ``events`` by
type (``ix_events_type``), so its cost follows the number of such events, not the fleet size.
Forecast dates are not used here: they are fitted per device on demand (the device page shows
them), which a 10,000-device table cannot afford per refresh."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import distinct, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from server.db.models import Command, Customer, Device, Event, Incident, IncidentStatus, Site
from server.fleet.devices import escape_like, placement_conditions
from server.incidents.service import IncidentFilter, filter_conditions

__all__ = [
    "FLEET_SORTS",
    "FleetQuery",
    "FleetRow",
    "command_sessions",
    "filter_options",
    "fleet_page",
    "open_by_priority",
]

_OPEN = (IncidentStatus.OPEN.value, IncidentStatus.ACKNOWLEDGED.value)

_open_incidents = (
    select(Incident.device_id.label("device_id"), func.count().label("n"))
    .where(Incident.status.in_(_OPEN))  # ix_incidents_status: only open ones are read
    .group_by(Incident.device_id)
    .subquery("open_incidents")
)

LOW_EVENT = "consumable.low"
CLEARING_EVENT = "maintenance.ended"

_later = aliased(Event)
_consumables_at_risk = (
    select(
        Event.device_id.label("device_id"),
        func.count(distinct(func.coalesce(Event.code, Event.type))).label("n"),
    )
    .where(
        Event.type == LOW_EVENT,
        ~exists().where(
            _later.device_id == Event.device_id,
            _later.type == CLEARING_EVENT,
            _later.ts > Event.ts,
        ),
    )
    .group_by(Event.device_id)
    .subquery("consumables_at_risk")
)

FLEET_SORTS: dict[str, Any] = {
    "id": Device.id,
    "status": Device.online,
    "state": Device.state,
    "model": Device.model,
    "customer": Customer.name,
    "site": Site.name,
    "open": func.coalesce(_open_incidents.c.n, 0),
    "last_seen": Device.last_seen,
    "risk": func.coalesce(_consumables_at_risk.c.n, 0),
}


@dataclass(frozen=True, slots=True)
class FleetQuery:
    q: str | None = None  # substring of id, serial, model or site
    customer: int | None = None
    site: int | None = None
    model: str | None = None
    state: str | None = None
    online: bool | None = None
    sort: str = "id"
    descending: bool = False
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class FleetRow:
    id: str
    online: bool
    state: str | None
    model: str | None
    customer: str | None
    site: str | None
    open_incidents: int
    last_seen: datetime | None
    consumables_at_risk: int


def _fleet_conditions(where: FleetQuery, scope: ColumnElement[bool] | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [] if scope is None else [scope]
    conditions.extend(placement_conditions(where.customer, where.site, where.model))
    if where.state:
        conditions.append(Device.state.is_(None) if where.state == "unknown" else Device.state == where.state)
    if where.online is not None:
        conditions.append(Device.online.is_(where.online))
    if where.q:
        pattern = f"%{escape_like(where.q.lower())}%"
        conditions.append(
            or_(
                *(
                    func.lower(column).like(pattern, escape="\\")
                    for column in (Device.id, Device.serial, Device.model, Device.site, Site.name)
                )
            )
        )
    return conditions


async def fleet_page(
    session: AsyncSession, where: FleetQuery, *, scope: ColumnElement[bool] | None
) -> tuple[list[FleetRow], int]:
    """One page of the fleet table and the number of matching devices."""
    column = FLEET_SORTS.get(where.sort, Device.id)
    order = column.desc().nulls_last() if where.descending else column.asc().nulls_last()
    conditions = _fleet_conditions(where, scope)
    stmt = (
        select(
            Device.id,
            Device.online,
            Device.state,
            Device.model,
            Customer.name,
            func.coalesce(Site.name, Device.site),
            func.coalesce(_open_incidents.c.n, 0),
            Device.last_seen,
            func.coalesce(_consumables_at_risk.c.n, 0),
            func.count().over(),
        )
        .outerjoin(Customer, Customer.id == Device.customer_id)
        .outerjoin(Site, Site.id == Device.site_id)
        .outerjoin(_open_incidents, _open_incidents.c.device_id == Device.id)
        .outerjoin(_consumables_at_risk, _consumables_at_risk.c.device_id == Device.id)
        .where(*conditions)
        .order_by(order, Device.id)
        .limit(where.limit)
        .offset(where.offset)
    )
    result = (await session.execute(stmt)).all()
    if not result:
        total = 0
        if where.offset:  # past the last page: the total still matters for the pager
            total = (
                await session.scalar(
                    select(func.count())
                    .select_from(Device)
                    .outerjoin(Site, Site.id == Device.site_id)
                    .where(*conditions)
                )
                or 0
            )
        return [], total
    rows = [FleetRow(*row[:9]) for row in result]
    return rows, int(result[0][9])


async def open_by_priority(
    session: AsyncSession, where: IncidentFilter, *, scope: ColumnElement[bool] | None
) -> dict[int, int]:
    """Open (or acknowledged) incidents now, per priority (1 urgent … 4 low)."""
    conditions = filter_conditions(where) + ([] if scope is None else [scope])
    rows = await session.execute(
        select(Incident.priority, func.count())
        .join(Device, Device.id == Incident.device_id)
        .where(Incident.status.in_(_OPEN), *conditions)
        .group_by(Incident.priority)
    )
    counts = dict.fromkeys((1, 2, 3, 4), 0)
    for priority, n in rows:
        counts[int(priority)] = int(n)
    return counts


async def filter_options(
    session: AsyncSession, scope: ColumnElement[bool] | None
) -> tuple[list[tuple[int, str]], list[tuple[int, str]], list[tuple[str, str]]]:
    """The customers, sites and models the caller may filter by (only those in their scope)."""
    device_scope = [] if scope is None else [scope]
    customer_ids = select(Device.customer_id).where(*device_scope).distinct()
    customers = [
        (int(cid), str(name))
        for cid, name in await session.execute(
            select(Customer.id, Customer.name).where(Customer.id.in_(customer_ids)).order_by(Customer.name)
        )
    ]
    site_ids = select(Device.site_id).where(*device_scope).distinct()
    sites = [
        (int(sid), f"{cname} / {sname}")
        for sid, cname, sname in await session.execute(
            select(Site.id, Customer.name, Site.name)
            .join(Customer, Customer.id == Site.customer_id)
            .where(Site.id.in_(site_ids))
            .order_by(Customer.name, Site.name)
        )
    ]
    models = [
        (str(m), str(m))
        for m in await session.scalars(
            select(Device.model)
            .where(Device.model.is_not(None), *device_scope)
            .distinct()
            .order_by(Device.model)
        )
    ]
    return customers, sites, models


async def command_sessions(session: AsyncSession, command_ids: Iterable[str]) -> dict[str, str]:
    """Command id → the remote session it ran in, for those of ``command_ids`` that ran in one
    (a sentence links a command to its row on the session's page)."""
    wanted = sorted(set(command_ids))
    if not wanted:
        return {}
    rows = await session.execute(
        select(Command.id, Command.session_id).where(Command.id.in_(wanted), Command.session_id.is_not(None))
    )
    return {command_id: session_id for command_id, session_id in rows if session_id}
