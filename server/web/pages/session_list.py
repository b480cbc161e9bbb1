"""The session list (``/sessions``, docs/web.md): the remote sessions in the caller's scope —
the scope of ``GET /api/v1/sessions`` (``server.sessions.listing``) — live ones first (queued,
awaiting consent, active), then the ended ones newest first, filtered by state, device,
technician, customer, site, model and the period they were opened in, 50 a page; and its CSV
(``/sessions.csv``, the same filters, every page). Each row links the session console
(``/sessions/{id}``) and the device; the number of commands is counted in the database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from server import clock
from server.api.deps import SessionDep
from server.base import access, permissions
from server.base.permissions import Capability
from server.base.users import Principal
from server.errors import InvalidInput
from server.kpi.export import parse_time
from server.sessions.listing import STATE_GROUPS, SessionQuery, owners, session_page
from server.web.auth import WebUser
from server.web.csv_export import EXPORT_LIMIT, csv_response
from server.web.paging import PAGE_SIZE, Paging
from server.web.queries import filter_options
from server.web.rendering import choice_param, known_params, page_router, placement_params, render

__all__ = ["CSV_HEADER", "SESSION_PARAMS", "STATES", "parse_sessions", "router"]

router = page_router()

STATES = tuple(STATE_GROUPS)
"""The ``state`` filter: ``live``, ``closed`` (ended: closed, expired or denied), ``all``."""
SESSION_PARAMS = ("state", "device", "technician", "customer", "site", "model", "since", "until", "page")
"""The query parameters of the list and its CSV: any other is a 422 naming it, never ignored."""
CSV_HEADER = (
    "id",
    "state",
    "device",
    "model",
    "customer",
    "site",
    "technician",
    "incident",
    "reason",
    "opened",
    "activated",
    "ended",
    "ended_by",
    "fixed",
    "outcome",
    "commands",
)


def parse_sessions(params: Mapping[str, str], *, limit: int = PAGE_SIZE, offset: int = 0) -> SessionQuery:
    """The list's filters from a query string, each checked: an unknown state, a customer or
    site that is not a number, a date that is not one and an unknown parameter are 422s naming
    the field."""
    known_params(params, SESSION_PARAMS)
    state = choice_param(params.get("state"), "state", STATES) or "all"
    since, until = (
        parse_time(value, name) if (value := params.get(name)) else None for name in ("since", "until")
    )
    if since is not None and until is not None and since >= until:
        raise InvalidInput("until: must be after the 'opened from' date", field="until")
    return SessionQuery(
        states=STATE_GROUPS[state],
        device=(params.get("device") or "").strip()[:64] or None,
        owner=(params.get("technician") or "").strip()[:128] or None,
        **placement_params(params),
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )


async def _context(query: Mapping[str, str], session: AsyncSession, user: Principal) -> dict[str, Any]:
    paging = Paging(query)
    where = parse_sessions(query, limit=paging.size, offset=paging.offset)
    rows, total = await session_page(session, user, where)
    customers, sites, models = await filter_options(
        session, access.device_condition(await access.scope_for(session, user))
    )
    return {
        "rows": rows,
        "where": where,
        "state": query.get("state") or "all",
        "params": query,
        **paging.context(total),
        "states": STATES,
        "customers": customers,
        "sites": sites,
        "models": models,
        "technicians": await owners(session, user),
        "csv_url": paging.export("/sessions.csv"),
    }


@router.get("/sessions", response_class=HTMLResponse)
async def session_list(request: Request, session: SessionDep, web: WebUser) -> Response:
    user = permissions.check(web.principal, Capability.READ_SESSIONS)
    return await render(request, "sessions.html", web, **await _context(request.query_params, session, user))


@router.get("/sessions.csv")
async def session_list_csv(request: Request, session: SessionDep, web: WebUser) -> Response:
    """Every session the page's filters match (all pages, at most :data:`EXPORT_LIMIT`)."""
    user = permissions.check(web.principal, Capability.READ_SESSIONS)
    rows, _ = await session_page(session, user, parse_sessions(request.query_params, limit=EXPORT_LIMIT))
    return csv_response(
        f"sessions-{clock.now():%Y%m%d-%H%M}.csv",
        CSV_HEADER,
        (
            (
                r.remote.id,
                r.remote.state,
                r.remote.device_id,
                r.model,
                r.customer,
                r.site,
                r.remote.owner,
                r.remote.incident_id,
                r.remote.reason,
                r.remote.created_at,
                r.remote.activated_at,
                r.remote.ended_at,
                r.remote.ended_by,
                r.remote.fixed,
                r.remote.outcome,
                r.commands,
            )
            for r in rows
        ),
    )
