"""Customers and their sites (read: technician, ops, admin; write: technician, admin), a device's
customer, site, criticality and decommissioning (``PATCH /devices/{id}``), and the devices
whose reported site gave them none (``GET /unassigned-devices``).

A technician reaches only the customers assigned to them (``server.base.access``): other
customers and their sites are not listed and are 403 to read or change; a device cannot be
moved to a customer outside their scope; a customer a technician creates is assigned to them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from server import customers
from server.api.deps import SessionDep, require_role
from server.api.devices import DeviceIdPath
from server.api.params import Count, Id
from server.api.schemas import Page
from server.api.service_schemas import (
    CustomerCreate,
    CustomerPublic,
    CustomerUpdate,
    DeviceAssignmentPublic,
    DeviceUpdate,
    SiteCreate,
    SitePublic,
    SiteUpdate,
)
from server.base import access
from server.base.users import Principal
from server.db.models import Customer, Role, Site
from server.errors import InvalidInput

__all__ = ["UnassignedDevicePublic", "router"]

router = APIRouter(tags=["customers"])

Reader = Annotated[Principal, require_role(Role.TECHNICIAN, Role.OPS)]
Writer = Annotated[Principal, require_role(Role.TECHNICIAN)]
CustomerId = Annotated[Id, Path(description="Customer id")]
SiteId = Annotated[Id, Path(description="Site id")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[Count, Query()]


def _changes(body: CustomerUpdate | SiteUpdate, nullable: frozenset[str] = frozenset()) -> dict[str, Any]:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key not in nullable:
            raise InvalidInput(f"{key}: cannot be null", field=key)
    if not changes:
        raise InvalidInput("body: nothing to change", field="body")
    return changes


@router.get("/customers", response_model=Page[CustomerPublic])
async def list_customers(
    *,
    session: SessionDep,
    user: Reader,
    q: Annotated[str | None, Query(max_length=128, description="Substring of the name")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[CustomerPublic]:
    scope = access.customer_condition(await access.scope_for(session, user))
    rows, total = await customers.list_customers(session, q=q, limit=limit, offset=offset, scope=scope)
    return Page(
        items=[CustomerPublic.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )


@router.post("/customers", status_code=201, response_model=CustomerPublic)
async def create_customer(body: CustomerCreate, session: SessionDep, user: Writer) -> CustomerPublic:
    customer = await customers.create_customer(
        session,
        name=body.name,
        criticality=body.criticality,
        contract_hours=body.contract_hours.model_dump() if body.contract_hours else None,
        cost_per_dispatch=body.cost_per_dispatch,
        actor=user.actor,
        assign_to=user.user_id if user.role is Role.TECHNICIAN else None,
    )
    return CustomerPublic.model_validate(customer)


@router.get("/customers/{customer_id}", response_model=CustomerPublic)
async def get_customer(customer_id: CustomerId, session: SessionDep, user: Reader) -> CustomerPublic:
    customer = await customers.get_customer(session, customer_id)
    await access.check_customer(session, user, customer_id)
    return CustomerPublic.model_validate(customer)


@router.patch("/customers/{customer_id}", response_model=CustomerPublic)
async def update_customer(
    customer_id: CustomerId, body: CustomerUpdate, session: SessionDep, user: Writer
) -> CustomerPublic:
    """Only the fields given change; ``contract_hours: null`` means 24x7."""
    changes = _changes(body, nullable=frozenset({"contract_hours"}))
    await customers.get_customer(session, customer_id)
    await access.check_customer(session, user, customer_id)
    customer = await customers.update_customer(session, customer_id, changes, actor=user.actor)
    return CustomerPublic.model_validate(customer)


@router.get("/customers/{customer_id}/sites", response_model=Page[SitePublic])
async def list_sites(
    *, customer_id: CustomerId, session: SessionDep, user: Reader, limit: Limit = 100, offset: Offset = 0
) -> Page[SitePublic]:
    await customers.get_customer(session, customer_id)
    await access.check_customer(session, user, customer_id)
    rows, total = await customers.list_sites(session, customer_id, limit=limit, offset=offset)
    return Page(
        items=[SitePublic.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )


@router.post("/customers/{customer_id}/sites", status_code=201, response_model=SitePublic)
async def create_site(
    customer_id: CustomerId, body: SiteCreate, session: SessionDep, user: Writer
) -> SitePublic:
    """A site; devices that already reported it by ``<customer name>/<site name>`` (or by its
    bare name, if they already have this customer) are assigned to it from now on."""
    await customers.get_customer(session, customer_id)
    await access.check_customer(session, user, customer_id)
    site = await customers.create_site(
        session,
        customer_id,
        name=body.name,
        criticality=body.criticality,
        attended=body.attended,
        actor=user.actor,
    )
    return SitePublic.model_validate(site)


@router.patch("/customers/{customer_id}/sites/{site_id}", response_model=SitePublic)
async def update_site(
    customer_id: CustomerId, site_id: SiteId, body: SiteUpdate, session: SessionDep, user: Writer
) -> SitePublic:
    """Only the fields given change; ``criticality: null`` means the customer's."""
    changes = _changes(body, nullable=frozenset({"criticality"}))
    await customers.get_site(session, customer_id, site_id)
    await access.check_customer(session, user, customer_id, via=("site", site_id))
    site = await customers.update_site(session, customer_id, site_id, changes, actor=user.actor)
    return SitePublic.model_validate(site)


@router.patch("/devices/{device_id}", response_model=DeviceAssignmentPublic)
async def update_device(
    device_id: DeviceIdPath, body: DeviceUpdate, session: SessionDep, user: Writer
) -> DeviceAssignmentPublic:
    """Customer, site (its customer follows), criticality, decommissioned_at; ``null`` clears.
    A technician may change only devices in their scope, and move them only to a customer in it."""
    await access.check_device(session, user, device_id)
    given = body.model_dump(exclude_unset=True)
    if not given:
        raise InvalidInput("body: nothing to change", field="body")
    await _check_destination(session, user, given)
    change = customers.DeviceAssignment(**given)
    device = await customers.assign_device(session, device_id, change, actor=user.actor)
    return DeviceAssignmentPublic.model_validate(device)


async def _check_destination(session: AsyncSession, user: Principal, given: dict[str, Any]) -> None:
    """The customer a device is given (directly, or through a site) must be in the caller's scope:
    a technician must not hand equipment to a customer they cannot see. Unknown ids are left to
    the service, which names the field."""
    customer_id = given.get("customer_id")
    if customer_id is not None and await session.get(Customer, customer_id) is not None:
        await access.check_customer(session, user, customer_id)
    if given.get("site_id") is not None:
        site = await session.get(Site, given["site_id"])
        if site is not None:
            await access.check_customer(session, user, site.customer_id, via=("site", site.id))


class UnassignedDevicePublic(BaseModel):
    device_id: str
    reported_site: str | None  # the inventory's ``site``, as the device sent it
    customer_id: int | None  # set by an operator already (the site is missing)
    reason: str  # not_reported | unknown | ambiguous | one_match
    explanation: str
    candidates: list[str]  # "<customer>/<site>" of every site the reported name could mean
    first_seen: datetime
    last_seen: datetime | None


@router.get("/unassigned-devices", response_model=Page[UnassignedDevicePublic])
async def list_unassigned_devices(
    *, session: SessionDep, user: Reader, limit: Limit = 100, offset: Offset = 0
) -> Page[UnassignedDevicePublic]:
    """Devices without a site (in the caller's scope), oldest first, with why their reported
    site gave them none and the sites it could mean: the work list for assigning them."""
    scope = access.device_condition(await access.scope_for(session, user))
    rows, total = await customers.unassigned_devices(session, scope=scope, limit=limit, offset=offset)
    items = [
        UnassignedDevicePublic(
            device_id=row.device.id,
            reported_site=row.device.site,
            customer_id=row.device.customer_id,
            reason=row.reason,
            explanation=customers.UNASSIGNED_REASONS[row.reason],
            candidates=row.candidates,
            first_seen=row.device.first_seen,
            last_seen=row.device.last_seen,
        )
        for row in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)
