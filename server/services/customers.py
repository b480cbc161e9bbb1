"""Customers, their sites, and which customer/site/criticality a device belongs to.

Criticality (1 low … 5 life-critical) is the business impact that raises incident priority: a
device's own, else its site's, else its customer's. A device that reports a site name in its
inventory is matched to the site of that name on first contact, if exactly one site has it.
Changes made by people are written to the audit log; the caller's transaction is committed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Customer, Device, DeviceAssignmentPeriod, Incident, IncidentStatus, Site
from server.db.types import utcnow
from server.errors import Conflict, InvalidInput, NotFound
from server.incidents import priority as prio
from server.kpi.rollups import mark_customer_devices
from server.services import audit

__all__ = [
    "UNSET",
    "DeviceAssignment",
    "assign_device",
    "assign_sites_from_inventory",
    "assignment_history",
    "create_customer",
    "create_site",
    "get_customer",
    "get_site",
    "list_customers",
    "list_sites",
    "record_assignment",
    "update_customer",
    "update_site",
]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""A field the caller did not give (distinct from an explicit None)."""


def _criticality(value: int | None, field: str) -> None:
    if value is not None and not 1 <= value <= 5:
        raise InvalidInput(f"{field}: must be between 1 and 5", field=field)


# -- customers ------------------------------------------------------------------------------------


async def get_customer(session: AsyncSession, customer_id: int) -> Customer:
    customer = await session.get(Customer, customer_id)
    if customer is None:
        raise NotFound("customer", customer_id)
    return customer


async def list_customers(
    session: AsyncSession, *, q: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[Customer], int]:
    conditions = [func.lower(Customer.name).contains(q.lower(), autoescape=True)] if q else []
    total = await session.scalar(select(func.count()).select_from(Customer).where(*conditions))
    rows = await session.scalars(
        select(Customer).where(*conditions).order_by(Customer.name).limit(limit).offset(offset)
    )
    return list(rows), total or 0


async def create_customer(
    session: AsyncSession,
    *,
    name: str,
    criticality: int = 3,
    contract_hours: dict[str, Any] | None = None,
    cost_per_dispatch: float = 0.0,
    actor: str,
) -> Customer:
    _criticality(criticality, "criticality")
    if await session.scalar(select(Customer.id).where(Customer.name == name)) is not None:
        raise Conflict(f"customer {name!r} already exists", field="name")
    customer = Customer(
        name=name, criticality=criticality, contract_hours=contract_hours, cost_per_dispatch=cost_per_dispatch
    )
    session.add(customer)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="customer.created",
        target=f"customer:{customer.id}",
        detail={"name": name, "criticality": criticality, "cost_per_dispatch": cost_per_dispatch},
    )
    await session.commit()
    return customer


async def update_customer(
    session: AsyncSession, customer_id: int, changes: dict[str, Any], *, actor: str
) -> Customer:
    """Apply ``changes`` (name, criticality, contract_hours, cost_per_dispatch)."""
    customer = await get_customer(session, customer_id)
    if "criticality" in changes:
        if changes["criticality"] is None:
            raise InvalidInput("criticality: a customer's criticality cannot be empty", field="criticality")
        _criticality(changes["criticality"], "criticality")
    if "name" in changes and changes["name"] != customer.name:
        taken = await session.scalar(select(Customer.id).where(Customer.name == changes["name"]))
        if taken is not None:
            raise Conflict(f"customer {changes['name']!r} already exists", field="name")
    for key, value in changes.items():
        setattr(customer, key, value)
    audit.record(
        session,
        actor=actor,
        action="customer.updated",
        target=f"customer:{customer.id}",
        detail=dict(changes),
    )
    if "criticality" in changes:
        await _reprioritise(session, select(Device.id).where(Device.customer_id == customer_id))
    if "contract_hours" in changes:  # the KPIs' contract months were built under the old hours
        await mark_customer_devices(session, customer_id)
    await session.commit()
    return customer


# -- sites ----------------------------------------------------------------------------------------


async def get_site(session: AsyncSession, customer_id: int, site_id: int) -> Site:
    site = await session.get(Site, site_id)
    if site is None or site.customer_id != customer_id:
        raise NotFound("site", site_id)
    return site


async def list_sites(
    session: AsyncSession, customer_id: int, *, limit: int = 100, offset: int = 0
) -> tuple[list[Site], int]:
    await get_customer(session, customer_id)
    total = await session.scalar(
        select(func.count()).select_from(Site).where(Site.customer_id == customer_id)
    )
    rows = await session.scalars(
        select(Site).where(Site.customer_id == customer_id).order_by(Site.name).limit(limit).offset(offset)
    )
    return list(rows), total or 0


async def create_site(
    session: AsyncSession,
    customer_id: int,
    *,
    name: str,
    criticality: int | None = None,
    attended: bool = False,
    actor: str,
) -> Site:
    await get_customer(session, customer_id)
    _criticality(criticality, "criticality")
    taken = await session.scalar(select(Site.id).where(Site.customer_id == customer_id, Site.name == name))
    if taken is not None:
        raise Conflict(f"site {name!r} already exists for customer {customer_id}", field="name")
    site = Site(customer_id=customer_id, name=name, criticality=criticality, attended=attended)
    session.add(site)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="site.created",
        target=f"site:{site.id}",
        detail={"customer_id": customer_id, "name": name, "criticality": criticality, "attended": attended},
    )
    await _match_waiting_devices(session, site)
    await session.commit()
    return site


async def update_site(
    session: AsyncSession, customer_id: int, site_id: int, changes: dict[str, Any], *, actor: str
) -> Site:
    site = await get_site(session, customer_id, site_id)
    if "criticality" in changes:
        _criticality(changes["criticality"], "criticality")
    if "name" in changes and changes["name"] != site.name:
        taken = await session.scalar(
            select(Site.id).where(Site.customer_id == customer_id, Site.name == changes["name"])
        )
        if taken is not None:
            raise Conflict(
                f"site {changes['name']!r} already exists for customer {customer_id}", field="name"
            )
    for key, value in changes.items():
        setattr(site, key, value)
    audit.record(session, actor=actor, action="site.updated", target=f"site:{site.id}", detail=dict(changes))
    if "criticality" in changes:
        await _reprioritise(session, select(Device.id).where(Device.site_id == site_id))
    await session.commit()
    return site


# -- devices ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceAssignment:
    """What ``PATCH /devices/{id}`` may change; UNSET fields stay as they are."""

    customer_id: int | None = UNSET
    site_id: int | None = UNSET
    criticality: int | None = UNSET
    decommissioned_at: datetime | None = UNSET


async def assign_device(
    session: AsyncSession, device_id: str, change: DeviceAssignment, *, actor: str
) -> Device:
    device = await session.get(Device, device_id)
    if device is None:
        raise NotFound("device", device_id)
    values: dict[str, Any] = {}
    if change.criticality is not UNSET:
        _criticality(change.criticality, "criticality")
        values["criticality"] = change.criticality
    if change.decommissioned_at is not UNSET:
        values["decommissioned_at"] = change.decommissioned_at
    values.update(await _ownership(session, device, change))
    before = (device.customer_id, device.site_id)
    for key, value in values.items():
        setattr(device, key, value)
    await record_assignment(session, device, before, at=utcnow())
    audit.record(
        session,
        actor=actor,
        action="device.updated",
        target=f"device:{device_id}",
        detail={k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()},
    )
    await _reprioritise(session, select(Device.id).where(Device.id == device_id))
    await session.commit()
    return device


async def _ownership(session: AsyncSession, device: Device, change: DeviceAssignment) -> dict[str, Any]:
    """The customer and site a change gives: a site brings its customer; another customer
    leaves the old site behind; a site of another customer than the one given is refused."""
    values: dict[str, Any] = {}
    if change.customer_id is not UNSET:
        if change.customer_id is not None and await session.get(Customer, change.customer_id) is None:
            raise InvalidInput(f"customer_id: no customer {change.customer_id}", field="customer_id")
        values["customer_id"] = change.customer_id
    if change.site_id is UNSET:
        if change.customer_id is not UNSET and device.site_id is not None:
            site = await session.get(Site, device.site_id)
            if site is not None and site.customer_id != change.customer_id:
                values["site_id"] = None
        return values
    if change.site_id is None:
        values["site_id"] = None
        return values
    site = await session.get(Site, change.site_id)
    if site is None:
        raise InvalidInput(f"site_id: no site {change.site_id}", field="site_id")
    if change.customer_id is not UNSET and change.customer_id != site.customer_id:
        raise InvalidInput(
            f"site_id: site {site.id} belongs to customer {site.customer_id}, not {change.customer_id}",
            field="site_id",
        )
    values["site_id"], values["customer_id"] = site.id, site.customer_id
    return values


async def assign_sites_from_inventory(session: AsyncSession, device_ids: Sequence[str]) -> None:
    """Devices without a site whose inventory names exactly one known site get it (and its
    customer). Joins the caller's transaction."""
    devices = list(
        await session.scalars(
            select(Device).where(
                Device.id.in_(device_ids), Device.site_id.is_(None), Device.site.is_not(None)
            )
        )
    )
    for device in devices:
        sites = list(await session.scalars(select(Site).where(Site.name == device.site).limit(2)))
        if len(sites) != 1:
            continue
        site = sites[0]
        if device.customer_id is not None and device.customer_id != site.customer_id:
            continue
        before = (device.customer_id, device.site_id)
        device.site_id, device.customer_id = site.id, site.customer_id
        await record_assignment(session, device, before, at=None)


async def _match_waiting_devices(session: AsyncSession, site: Site) -> None:
    """A new site is given to devices that already reported its name (if the name is unique)."""
    same_name = await session.scalar(select(func.count()).select_from(Site).where(Site.name == site.name))
    if same_name != 1:
        return
    waiting = await session.scalars(
        select(Device).where(
            Device.site == site.name,
            Device.site_id.is_(None),
            (Device.customer_id.is_(None)) | (Device.customer_id == site.customer_id),
        )
    )
    for device in waiting:
        before = (device.customer_id, device.site_id)
        device.site_id, device.customer_id = site.id, site.customer_id
        await record_assignment(session, device, before, at=None)


# -- assignment history -------------------------------------------------------------------------------


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def record_assignment(
    session: AsyncSession, device: Device, before: tuple[int | None, int | None], *, at: datetime | None
) -> None:
    """Keep ``device_assignments`` in step with a change of the device's customer/site (already
    set on ``device``) from ``before``, effective ``at``; None: a match from the device's own
    inventory, which holds for its whole history when no change was recorded before.

    The KPIs count downtime and incidents to the customer at the time (docs/kpis.md), so a move
    closes the open period at ``at`` and opens another; the first change recorded also writes the
    values before it, from the epoch on."""
    after = (device.customer_id, device.site_id)
    if after == before:
        return
    rows = list(
        await session.scalars(
            select(DeviceAssignmentPeriod)
            .where(DeviceAssignmentPeriod.device_id == device.id)
            .order_by(DeviceAssignmentPeriod.valid_from_s)
        )
    )
    if not rows:
        if at is None:
            at = EPOCH
        else:  # unassigned before, too, is history: the first period reaches back to the beginning
            session.add(_period(device.id, before, EPOCH, at))
    elif at is None:
        at = utcnow()
    current = next((row for row in rows if row.valid_to is None), None)
    if current is not None:
        if current.valid_from >= at:  # changed again at the same instant: replace it
            current.customer_id, current.site_id = after
            return
        current.valid_to = at
    session.add(_period(device.id, after, at, None))


def _period(
    device_id: str, owner: tuple[int | None, int | None], start: datetime, end: datetime | None
) -> DeviceAssignmentPeriod:
    return DeviceAssignmentPeriod(
        device_id=device_id, customer_id=owner[0], site_id=owner[1], valid_from=start, valid_to=end
    )


async def assignment_history(session: AsyncSession, device_id: str) -> list[DeviceAssignmentPeriod]:
    """The device's customer/site periods, oldest first (empty: its current ones throughout)."""
    return list(
        await session.scalars(
            select(DeviceAssignmentPeriod)
            .where(DeviceAssignmentPeriod.device_id == device_id)
            .order_by(DeviceAssignmentPeriod.valid_from_s)
        )
    )


async def _reprioritise(session: AsyncSession, device_ids: Any) -> None:
    """Criticality changed: open incidents of these devices get their priority again."""
    incidents = list(
        await session.scalars(
            select(Incident).where(
                Incident.device_id.in_(device_ids),
                Incident.status.in_([IncidentStatus.OPEN.value, IncidentStatus.ACKNOWLEDGED.value]),
            )
        )
    )
    for incident in incidents:
        criticality = await prio.criticality(session, incident.device_id)
        incident.priority = prio.priority(criticality, incident.kind, incident.effect, incident.severity)
