"""Customers, their sites, and which customer/site/criticality a device belongs to.

Criticality (1 low … 5 life-critical) is the business impact that raises incident priority: a
device's own, else its site's, else its customer's.

A device that reports a site in its inventory gets that site (and its customer) only when the
name is unambiguous: ``<customer name>/<site name>``, or a bare site name that exactly one site
has (within the device's customer, if it already has one). Anything else leaves it unassigned,
logged and listed for an operator (:func:`unassigned_devices`); two hospitals that both have a
"Radiology" must never share each other's equipment (issue 13). An assignment starts when it is
made (an inventory: when it was received), never earlier.

Changes are written to the audit log; the caller's transaction is committed here, except for
:func:`assign_sites_from_inventory`, which joins the ingest batch's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from server.base import audit
from server.base import priority as prio
from server.db.models import (
    Customer,
    Device,
    DeviceAssignmentPeriod,
    Incident,
    IncidentStatus,
    Site,
    TechnicianAssignment,
)
from server.db.types import utcnow
from server.errors import Conflict, InvalidInput, NotFound
from server.kpi.rollups import mark_customer_devices

logger = logging.getLogger(__name__)

__all__ = [
    "SITE_SEPARATOR",
    "UNASSIGNED_REASONS",
    "UNSET",
    "DeviceAssignment",
    "UnassignedDevice",
    "assign_device",
    "assign_sites_from_inventory",
    "assignment_history",
    "create_customer",
    "create_site",
    "get_customer",
    "get_site",
    "list_customers",
    "list_sites",
    "qualified_name",
    "record_assignment",
    "unassigned_devices",
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
    session: AsyncSession,
    *,
    q: str | None = None,
    limit: int = 100,
    offset: int = 0,
    scope: ColumnElement[bool] | None = None,
) -> tuple[list[Customer], int]:
    """``scope``: the caller's customer condition (``server.base.access.customer_condition``)."""
    conditions = [func.lower(Customer.name).contains(q.lower(), autoescape=True)] if q else []
    if scope is not None:
        conditions.append(scope)
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
    assign_to: int | None = None,
) -> Customer:
    """A new customer. ``assign_to``: the id of a technician who creates it, assigned to it in the
    same transaction (technicians see only their customers: without it, the one who created the
    customer could not see it)."""
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
    if assign_to is not None:
        session.add(TechnicianAssignment(user_id=assign_to, customer_id=customer.id, created_at=utcnow()))
        audit.record(
            session,
            actor=actor,
            action="user.assigned",
            target=actor,
            detail={"customer_id": customer.id, "customer": name, "reason": "created the customer"},
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
    await _match_waiting_devices(session, site, await get_customer(session, customer_id))
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


SITE_SEPARATOR = "/"
"""Between the customer's name and the site's in a qualified site name ("St Mary Hospital/Radiology")."""


def qualified_name(customer: Customer, site: Site) -> str:
    """The name an installer puts in a device's ``site`` setting to name exactly this site."""
    return f"{customer.name}{SITE_SEPARATOR}{site.name}"


def _designates(reported: str) -> ColumnElement[bool]:
    """Sites (joined with their customer) that a reported name names: by their own name, or by
    ``<customer name>/<site name>``. Compared whole, so a customer or site name that contains
    the separator itself cannot be split the wrong way: every reading that fits is a candidate."""
    return or_(Site.name == reported, (Customer.name + SITE_SEPARATOR + Site.name) == reported)


async def _candidates(
    session: AsyncSession, reported: str, customer_id: int | None
) -> list[tuple[Site, str]]:
    """The sites ``reported`` could mean, with their qualified names, sorted by those. A device
    that already has a customer reads a bare name within that customer only."""
    query = (
        select(Site, Customer.name)
        .join(Customer, Customer.id == Site.customer_id)
        .where(_designates(reported))
        .order_by(Customer.name, Site.name)
    )
    if customer_id is not None:
        query = query.where(Site.customer_id == customer_id)
    return [(site, f"{name}{SITE_SEPARATOR}{site.name}") for site, name in await session.execute(query)]


async def assign_sites_from_inventory(session: AsyncSession, received: Mapping[str, datetime]) -> None:
    """Devices without a site whose inventory (received at ``received[device_id]``) names exactly
    one site get it, and its customer, from that instant on. A name that several sites have, or
    none, leaves the device unassigned for an operator (``GET /unassigned-devices``) and is
    logged. Joins the caller's transaction."""
    devices = list(
        await session.scalars(
            select(Device)
            .where(Device.id.in_(sorted(received)), Device.site_id.is_(None), Device.site.is_not(None))
            .order_by(Device.id)
        )
    )
    for device in devices:
        assert device.site is not None  # the query says so
        candidates = await _candidates(session, device.site, device.customer_id)
        if len(candidates) != 1:
            _log_refusal(device, candidates)
            continue
        await _match(session, device, candidates[0][0], at=received[device.id], how="inventory")


def _log_refusal(device: Device, candidates: list[tuple[Site, str]]) -> None:
    within = f" of customer {device.customer_id}" if device.customer_id is not None else ""
    if candidates:
        names = ", ".join(repr(name) for _, name in candidates)
        logger.warning(
            "device %s reports site %r: %d sites%s have that name (%s); left without a site: "
            "report the qualified name '<customer>%s<site>', or assign it (PATCH /devices/%s)",
            device.id,
            device.site,
            len(candidates),
            within,
            names,
            SITE_SEPARATOR,
            device.id,
        )
    else:  # usually a site not entered yet (it takes the device when it is): not a warning
        logger.info(
            "device %s reports site %r: no site%s has that name; left without a site",
            device.id,
            device.site,
            within,
        )


async def _match(session: AsyncSession, device: Device, site: Site, *, at: datetime, how: str) -> None:
    """Give ``device`` the site (and its customer) from ``at`` on, with an audit entry: who owns a
    device decides who sees it, so an automatic assignment is as traceable as a person's."""
    before = (device.customer_id, device.site_id)
    device.site_id, device.customer_id = site.id, site.customer_id
    await record_assignment(session, device, before, at=at)
    audit.record(
        session,
        actor="server",
        action="device.site_matched",
        target=f"device:{device.id}",
        detail={"reported": device.site, "customer_id": site.customer_id, "site_id": site.id, "by": how},
    )
    await _reprioritise(session, select(Device.id).where(Device.id == device.id))


async def _match_waiting_devices(session: AsyncSession, site: Site, customer: Customer) -> None:
    """A new site is given, from now on, to devices that already reported it by its qualified
    name, or by its bare name when they already have this customer. A bare name alone is not
    enough here: sites are entered one after another, and the first "Radiology" would take the
    devices of every hospital that has one (issue 13). Those wait for an operator, or for their
    next inventory once the name is unique."""
    qualified = qualified_name(customer, site)
    waiting = await session.scalars(
        select(Device)
        .where(
            Device.site_id.is_(None),
            or_(
                (Device.site == qualified)
                & (Device.customer_id.is_(None) | (Device.customer_id == customer.id)),
                (Device.site == site.name) & (Device.customer_id == customer.id),
            ),
        )
        .order_by(Device.id)
    )
    now = utcnow()
    for device in list(waiting):
        assert device.site is not None
        candidates = await _candidates(session, device.site, device.customer_id)
        if [each.id for each, _ in candidates] == [site.id]:
            await _match(session, device, site, at=now, how="site.created")
    await _warn_if_now_ambiguous(session, site)


async def _warn_if_now_ambiguous(session: AsyncSession, site: Site) -> None:
    """Devices matched earlier by a bare name that this new site now shares keep their site (we
    cannot tell an automatic match from a confirmed one without a record of it): say so."""
    matched = list(
        await session.scalars(
            select(Device.id)
            .join(Site, Site.id == Device.site_id)
            .where(Device.site == site.name, Site.name == site.name, Site.id != site.id)
            .order_by(Device.id)
            .limit(11)
        )
    )
    if matched:
        logger.warning(
            "site name %r is now used by more than one customer; devices that reported the bare "
            "name keep the site they have (check them): %s%s",
            site.name,
            ", ".join(matched[:10]),
            ", …" if len(matched) > 10 else "",
        )


@dataclass(frozen=True, slots=True)
class UnassignedDevice:
    """A device without a site, and why its report did not give it one."""

    device: Device
    reason: str  # see UNASSIGNED_REASONS
    candidates: list[str]  # qualified names of the sites the reported name could mean


UNASSIGNED_REASONS = {
    "not_reported": "the device reports no site",
    "unknown": "no site has the reported name",
    "ambiguous": "several sites have the reported name: report '<customer>/<site>'",
    "one_match": "one site has the name; it is taken at the device's next inventory",
}


async def unassigned_devices(
    session: AsyncSession, *, scope: ColumnElement[bool] | None, limit: int = 100, offset: int = 0
) -> tuple[list[UnassignedDevice], int]:
    """Devices (in ``scope``, the caller's device condition) without a site, oldest first, with
    the reason: what an operator works through to assign them."""
    conditions: list[ColumnElement[bool]] = [Device.site_id.is_(None), Device.decommissioned_at.is_(None)]
    if scope is not None:
        conditions.append(scope)
    total = await session.scalar(select(func.count()).select_from(Device).where(*conditions))
    rows = list(
        await session.scalars(
            select(Device)
            .where(*conditions)
            .order_by(Device.first_seen, Device.id)
            .limit(limit)
            .offset(offset)
        )
    )
    listed: list[UnassignedDevice] = []
    for device in rows:
        if not device.site:
            listed.append(UnassignedDevice(device, "not_reported", []))
            continue
        names = [name for _, name in await _candidates(session, device.site, device.customer_id)]
        reason = "unknown" if not names else "ambiguous" if len(names) > 1 else "one_match"
        listed.append(UnassignedDevice(device, reason, names))
    return listed, total or 0


# -- assignment history -------------------------------------------------------------------------------


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def record_assignment(
    session: AsyncSession, device: Device, before: tuple[int | None, int | None], *, at: datetime
) -> None:
    """Keep ``device_assignments`` in step with a change of the device's customer/site (already
    set on ``device``) from ``before``, effective ``at``: for a person's change, when it was made;
    for a match from the device's inventory, when that inventory was received (never earlier:
    what the device did before it was known to belong to a customer is not that customer's).

    The KPIs count downtime and incidents to the customer at the time (docs/kpis.md), so a move
    closes the open period at ``at`` and opens another; the first change recorded also writes the
    values before it (for a new device: unassigned), from the epoch on."""
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
    if not rows:  # what it was before is history too: the first period reaches back to the beginning
        session.add(_period(device.id, before, EPOCH, at))
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
