"""Customers and their sites (read: technician, ops, admin; write: technician, admin), and a
device's customer, site, criticality and decommissioning (``PATCH /devices/{id}``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from server.api.deps import SessionDep, require_role
from server.api.devices import DeviceIdPath
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
from server.db.models import Role
from server.errors import InvalidInput
from server.services import access, customers
from server.services.users import Principal

__all__ = ["router"]

router = APIRouter(tags=["customers"])

Reader = Annotated[Principal, require_role(Role.TECHNICIAN, Role.OPS)]
Writer = Annotated[Principal, require_role(Role.TECHNICIAN)]
CustomerId = Annotated[int, Path(ge=1, description="Customer id")]
SiteId = Annotated[int, Path(ge=1, description="Site id")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


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
    _user: Reader,
    q: Annotated[str | None, Query(max_length=128, description="Substring of the name")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[CustomerPublic]:
    rows, total = await customers.list_customers(session, q=q, limit=limit, offset=offset)
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
    )
    return CustomerPublic.model_validate(customer)


@router.get("/customers/{customer_id}", response_model=CustomerPublic)
async def get_customer(customer_id: CustomerId, session: SessionDep, _user: Reader) -> CustomerPublic:
    return CustomerPublic.model_validate(await customers.get_customer(session, customer_id))


@router.patch("/customers/{customer_id}", response_model=CustomerPublic)
async def update_customer(
    customer_id: CustomerId, body: CustomerUpdate, session: SessionDep, user: Writer
) -> CustomerPublic:
    """Only the fields given change; ``contract_hours: null`` means 24x7."""
    changes = _changes(body, nullable=frozenset({"contract_hours"}))
    customer = await customers.update_customer(session, customer_id, changes, actor=user.actor)
    return CustomerPublic.model_validate(customer)


@router.get("/customers/{customer_id}/sites", response_model=Page[SitePublic])
async def list_sites(
    *, customer_id: CustomerId, session: SessionDep, _user: Reader, limit: Limit = 100, offset: Offset = 0
) -> Page[SitePublic]:
    rows, total = await customers.list_sites(session, customer_id, limit=limit, offset=offset)
    return Page(
        items=[SitePublic.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )


@router.post("/customers/{customer_id}/sites", status_code=201, response_model=SitePublic)
async def create_site(
    customer_id: CustomerId, body: SiteCreate, session: SessionDep, user: Writer
) -> SitePublic:
    """A site; devices that already reported this site name (unique) are assigned to it."""
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
    site = await customers.update_site(session, customer_id, site_id, changes, actor=user.actor)
    return SitePublic.model_validate(site)


@router.patch("/devices/{device_id}", response_model=DeviceAssignmentPublic)
async def update_device(
    device_id: DeviceIdPath, body: DeviceUpdate, session: SessionDep, user: Writer
) -> DeviceAssignmentPublic:
    """Customer, site (its customer follows), criticality, decommissioned_at; ``null`` clears.
    A technician may change only devices in their scope."""
    await access.check_device(session, user, device_id)
    given = body.model_dump(exclude_unset=True)
    if not given:
        raise InvalidInput("body: nothing to change", field="body")
    change = customers.DeviceAssignment(**given)
    device = await customers.assign_device(session, device_id, change, actor=user.actor)
    return DeviceAssignmentPublic.model_validate(device)
