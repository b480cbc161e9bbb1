"""The fleet table (``GET /devices`` for people): every device in the caller's scope with its
status, open incidents and consumables at risk; searched, filtered, sorted and paged in one
SQL query (``server.web.queries``). htmx asks for the table alone when a filter changes and
every few seconds (live status)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from server.api.deps import SessionDep
from server.base import access, permissions
from server.base.permissions import Capability
from server.db.models import DeviceState
from server.errors import InvalidInput
from server.web.auth import WebSession, WebUser
from server.web.queries import FLEET_SORTS, FleetQuery, filter_options, fleet_page
from server.web.rendering import PAGE_SIZE, int_param, page_router, render, templates

__all__ = ["STATES", "router"]

router = page_router()

STATES = [state.value for state in DeviceState]


def _fleet_query(request: Request) -> FleetQuery:
    params = request.query_params
    page = max(1, int_param(params.get("page"), "page") or 1)
    online = params.get("online")
    sort = params.get("sort") or "id"
    if sort not in FLEET_SORTS:
        raise InvalidInput(f"sort: {sort!r} is not one of {', '.join(FLEET_SORTS)}", field="sort")
    return FleetQuery(
        q=(params.get("q") or "").strip()[:128] or None,
        customer=int_param(params.get("customer"), "customer"),
        site=int_param(params.get("site"), "site"),
        model=params.get("model") or None,
        state=params.get("state") or None,
        online=None if online in (None, "") else online == "1",
        sort=sort,
        descending=params.get("dir") == "desc",
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )


async def _fleet_context(request: Request, session: SessionDep, web: WebSession) -> dict[str, Any]:
    where = _fleet_query(request)
    scope = access.device_condition(await access.scope_for(session, web.principal))
    rows, total = await fleet_page(session, where, scope=scope)
    params = {k: v for k, v in request.query_params.items() if v and k != "page"}
    page = where.offset // PAGE_SIZE + 1

    def link(**changes: Any) -> str:
        merged = {**params, **{k: str(v) for k, v in changes.items()}}
        return "?" + urlencode({k: v for k, v in merged.items() if v})

    return {
        "rows": rows,
        "total": total,
        "where": where,
        "page": page,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "link": link,
        "query": urlencode(params | {"page": str(page)}),
    }


@router.get("/fleet", response_class=HTMLResponse)
async def fleet_view(request: Request, session: SessionDep, web: WebUser) -> Response:
    permissions.check(web.principal, Capability.READ_FLEET)
    context = await _fleet_context(request, session, web)
    if request.headers.get("hx-request"):
        return templates.TemplateResponse(request, "_fleet_table.html", context)
    scope = access.device_condition(await access.scope_for(session, web.principal))
    customers, sites, models = await filter_options(session, scope)
    return await render(
        request,
        "fleet.html",
        web,
        customers=customers,
        sites=sites,
        models=models,
        states=STATES,
        **context,
    )
