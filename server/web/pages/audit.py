"""The audit log (``GET /audit`` for people: ops and admin): entries filtered by actor,
action, target and period, newest first, 50 a page — from ``server.base.audit``, the service
the API's endpoint calls, with the same parsing of dates. Each entry reads as a sentence with
links (``server.web.audit_text``), its full detail beside it."""

from __future__ import annotations

from datetime import date

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from server.api.deps import SessionDep
from server.base import audit, permissions
from server.base.permissions import Capability
from server.kpi.export import parse_time
from server.web import audit_text
from server.web.auth import WebUser
from server.web.paging import Paging
from server.web.queries import command_sessions
from server.web.rendering import page_router, render

__all__ = ["router"]

router = page_router()


@router.get("/audit", response_class=HTMLResponse)
async def audit_view(request: Request, session: SessionDep, web: WebUser) -> Response:
    permissions.check(web.principal, Capability.READ_AUDIT)
    params = request.query_params
    paging = Paging(params)
    window = {name: parse_time(value, name) for name in ("since", "until") if (value := params.get(name))}
    entries, total = await audit.query(
        session,
        audit.AuditFilter(
            actor=params.get("actor") or None,
            action=params.get("action") or None,
            target=params.get("target") or None,
            **window,
        ),
        limit=paging.size,
        offset=paging.offset,
    )
    sessions = await command_sessions(session, audit_text.command_ids(e.detail or {} for e in entries))
    return await render(
        request,
        "audit.html",
        web,
        rows=[(e, audit_text.sentence_of(e, sessions)) for e in entries],
        params=params,
        **paging.context(total),
        today=date.today().isoformat(),
    )
