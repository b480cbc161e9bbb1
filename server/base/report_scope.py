"""The customer a KPI report is for, as the caller's scope imposes it (``server.base.access``):
a customer's report is always their own customer's, a technician's one assigned customer's;
ops and admin report over the whole fleet unless they pick a customer.

One rule for every door that computes a report — the console's dashboard, its charts and CSV —
so none of them can widen a caller's view. The KPI API (``server/api/kpis.py``) uses it too.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from server.base import access
from server.base.users import Principal
from server.db.models import Role
from server.errors import Forbidden, InvalidInput, NotFound

__all__ = ["report_customer"]


async def report_customer(session: AsyncSession, principal: Principal, customer: int | None) -> int | None:
    """The ``customer`` filter of ``principal``'s report (None: the whole fleet). A customer
    outside the scope is 404 for a customer and 403 for a technician; a technician with several
    customers must choose one (422 listing them)."""
    scope = await access.scope_for(session, principal)
    if scope.customer_ids is None:
        return customer
    if customer is not None:
        if customer in scope.customer_ids:
            return customer
        if principal.role is Role.CUSTOMER:
            raise NotFound("customer", customer)
        raise Forbidden(f"customer: you are not assigned to customer {customer}; ask an admin to assign you")
    if len(scope.customer_ids) == 1:
        return next(iter(scope.customer_ids))
    if not scope.customer_ids:
        raise Forbidden("KPIs: you are not assigned to any customer; ask an admin to assign you")
    mine = ", ".join(str(c) for c in sorted(scope.customer_ids))
    raise InvalidInput(f"customer: choose one of your customers ({mine})", field="customer")
