"""Which console pages a person may open, in the order of the navigation — and so where they
land after signing in: the first of them.

A page is in the list when the permissions table (``server.base.permissions``) gives the role
the page's capability *and* the page can answer for the caller's scope: the dashboard computes
a KPI report for one customer or the whole fleet (``server.base.report_scope``), so a
technician assigned to no customer would get a 403 there and one assigned to several a 422 —
the first is left out (they land on the incident queue, which shows the devices not yet placed
with a customer), the second gets the dashboard of their first customer."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from server.base import access, permissions
from server.base.access import Scope
from server.base.permissions import Capability
from server.base.users import Principal

__all__ = ["PAGES", "NavLink", "Page", "landing", "links"]


@dataclass(frozen=True, slots=True)
class Page:
    key: str
    label: str
    path: str
    capability: Capability


PAGES = (
    Page("dashboard", "Dashboard", "/", Capability.READ_KPIS),
    Page("incidents", "Incidents", "/incidents", Capability.READ_INCIDENTS),
    Page("fleet", "Fleet", "/fleet", Capability.READ_FLEET),
    Page("sessions", "Sessions", "/sessions", Capability.READ_SESSIONS),
    Page("knowledge", "Knowledge", "/knowledge", Capability.READ_KNOWLEDGE),
    Page("audit", "Audit log", "/audit", Capability.READ_AUDIT),
)
"""The navigation, in order; the first a person may open is where they land."""


@dataclass(frozen=True, slots=True)
class NavLink:
    key: str
    label: str
    href: str


def _href(page: Page, scope: Scope) -> str | None:
    """Where the page's link goes for this scope (None: the page cannot answer for it)."""
    if page.key != "dashboard" or scope.customer_ids is None or len(scope.customer_ids) == 1:
        return page.path
    if not scope.customer_ids:
        return None  # no customer to report on: the dashboard would be a 403
    return f"/?customer={min(scope.customer_ids)}"  # several: the report needs one chosen


def links_for(principal: Principal, scope: Scope) -> list[NavLink]:
    """The pages ``principal`` may open, with their links (pure: for a known scope)."""
    out = []
    for page in PAGES:
        if not permissions.allows(principal, page.capability):
            continue
        href = _href(page, scope)
        if href is not None:
            out.append(NavLink(page.key, page.label, href))
    return out


async def links(session: AsyncSession, principal: Principal) -> list[NavLink]:
    """The navigation of ``principal``: the pages they may open, in order."""
    return links_for(principal, await access.scope_for(session, principal))


async def landing(session: AsyncSession, principal: Principal) -> str:
    """The first page ``principal`` may open (the fleet, which every role reads, if none)."""
    found = await links(session, principal)
    return found[0].href if found else "/fleet"
