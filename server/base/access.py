"""Who may see and act on which devices: the data scope behind every role check.

Roles decide *which endpoints* a caller may use (``server.api.deps.require_role``); the scope
decides *which devices* (and so which incidents, sessions, commands and KPIs) they reach:

- ``admin``, ``ops``, ``provisioning``: the whole fleet (ops only reads: the routes say so);
- ``technician``: devices of the customers assigned to them (``technician_assignments``), and
  devices not yet assigned to any customer (someone has to triage a newly seen device);
- ``customer``: devices of their own customer.

The same scope covers what belongs to customers: a technician lists and reads only the
customers (and their sites) assigned to them (:func:`customer_condition`, :func:`check_customer`);
rules and their alerts follow the devices (``server.maintenance.rules``).

A device outside a caller's scope is reported as *not found* to a ``customer`` (a customer must
not learn that another customer's device exists) and as *forbidden* to a technician.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from server.base.users import Principal
from server.db.models import Customer, Device, Role, TechnicianAssignment
from server.errors import Forbidden, NotFound

__all__ = ["Scope", "check_customer", "check_device", "customer_condition", "device_condition", "scope_for"]

HOW_TO_GET_ACCESS = "an admin can assign you with 'fleetcare server assign'"


@dataclass(frozen=True, slots=True)
class Scope:
    """``customer_ids`` None: every device; otherwise only devices of these customers."""

    customer_ids: frozenset[int] | None
    unassigned: bool = False  # also devices without a customer

    @property
    def everything(self) -> bool:
        return self.customer_ids is None

    def allows_customer(self, customer_id: int | None) -> bool:
        if self.customer_ids is None:
            return True
        if customer_id is None:
            return self.unassigned
        return customer_id in self.customer_ids


async def scope_for(session: AsyncSession, principal: Principal) -> Scope:
    if principal.role is Role.CUSTOMER:
        ids = {principal.customer_id} if principal.customer_id is not None else set()
        return Scope(frozenset(ids))
    if principal.role is Role.TECHNICIAN:
        rows = await session.scalars(
            select(TechnicianAssignment.customer_id).where(TechnicianAssignment.user_id == principal.user_id)
        )
        return Scope(frozenset(rows), unassigned=True)
    return Scope(None)


def device_condition(scope: Scope) -> ColumnElement[bool] | None:
    """A WHERE condition on :class:`Device` for listings (None: no restriction)."""
    if scope.customer_ids is None:
        return None
    mine = Device.customer_id.in_(sorted(scope.customer_ids))
    return or_(mine, Device.customer_id.is_(None)) if scope.unassigned else mine


async def check_device(
    session: AsyncSession, principal: Principal, device_id: str, *, via: tuple[str, object] | None = None
) -> Device:
    """The device if ``principal`` may reach it; :class:`NotFound` / :class:`Forbidden` otherwise.

    ``via`` (e.g. ``("incident", 7)``) names the object the caller actually asked for, which
    belongs to the device: a customer is then told *that* was not found, and a technician's
    message names it.
    """
    device = await session.get(Device, device_id)
    what, ident = via if via is not None else ("device", device_id)
    if device is None:
        raise NotFound(what, ident)
    scope = await scope_for(session, principal)
    if not scope.allows_customer(device.customer_id):
        if principal.role is Role.CUSTOMER:
            raise NotFound(what, ident)
        subject = f"device {device_id!r}" if via is None else f"{what} {ident!r} (device {device_id!r})"
        raise Forbidden(f"{subject} belongs to a customer you are not assigned to; {HOW_TO_GET_ACCESS}")
    return device


def customer_condition(scope: Scope) -> ColumnElement[bool] | None:
    """A WHERE condition on :class:`Customer` for listings (None: no restriction)."""
    if scope.customer_ids is None:
        return None
    return Customer.id.in_(sorted(scope.customer_ids))


async def check_customer(
    session: AsyncSession, principal: Principal, customer_id: int, *, via: tuple[str, object] | None = None
) -> None:
    """Refuse a customer (or, ``via``, an object of it such as a site) outside the caller's scope:
    :class:`NotFound` for a ``customer`` user (as for devices), :class:`Forbidden` for a
    technician, saying how to get access. The caller has checked that the customer exists."""
    scope = await scope_for(session, principal)
    if scope.customer_ids is None or customer_id in scope.customer_ids:
        return
    what, ident = via if via is not None else ("customer", customer_id)
    if principal.role is Role.CUSTOMER:
        raise NotFound(what, ident)
    subject = f"customer {customer_id}" if via is None else f"{what} {ident!r} (customer {customer_id})"
    raise Forbidden(f"{subject}: you are not assigned to this customer; {HOW_TO_GET_ACCESS}")
