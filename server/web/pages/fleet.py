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
from server.web.auth import WebSession, WebUser
from server.web.paging import Paging
from server.web.queries import FLEET_SORTS, FleetQuery, filter_options, fleet_page
from server.web.rendering import choice_param, page_router, placement_params, render, templates

__all__ = ["STATES", "router"]

router = page_router()

STATES = [state.value for state in DeviceState]


def _fleet_query(request: Request, paging: Paging) -> FleetQuery:
    params = request.query_params
    online = choice_param(params.get("online"), "online", ("0", "1"))
    return FleetQuery(
        q=(params.get("q") or "").strip()[:128] or None,
        **placement_params(params),
        state=choice_param(params.get("state"), "state", STATES),
        online=None if online is None else online == "1",
        sort=choice_param(params.get("sort"), "sort", FLEET_SORTS) or "id",
        descending=choice_param(params.get("dir"), "dir", ("asc", "desc")) == "desc",
        limit=paging.size,
        offset=paging.offset,
    )


async def _fleet_context(request: Request, session: SessionDep, web: WebSession) -> dict[str, Any]:
    paging = Paging(request.query_params)
    where = _fleet_query(request, paging)
    scope = access.device_condition(await access.scope_for(session, web.principal))
    rows, total = await fleet_page(session, where, scope=scope)
    context = paging.context(total)
    # the table's own links keep the page (htmx refreshes the page being looked at)
    context["query"] = urlencode(paging.filters | {"page": str(paging.page)})
    return {"rows": rows, "where": where, **context}


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
