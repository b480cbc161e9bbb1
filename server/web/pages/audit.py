"""The audit log (``GET /audit`` for people: ops and admin): entries filtered by actor,
action, target and period, newest first, 50 a page — from ``server.base.audit``, the service
the API's endpoint calls, with the same parsing of dates."""

from __future__ import annotations

from datetime import date
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from server.api.deps import SessionDep
from server.base import audit, permissions
from server.base.permissions import Capability
from server.kpi.export import parse_time
from server.web.auth import WebUser
from server.web.rendering import PAGE_SIZE, int_param, page_router, render

__all__ = ["router"]

router = page_router()


@router.get("/audit", response_class=HTMLResponse)
async def audit_view(request: Request, session: SessionDep, web: WebUser) -> Response:
    permissions.check(web.principal, Capability.READ_AUDIT)
    params = request.query_params
    page = max(1, int_param(params.get("page"), "page") or 1)
    window = {name: parse_time(value, name) for name in ("since", "until") if (value := params.get(name))}
    entries, total = await audit.query(
        session,
        audit.AuditFilter(
            actor=params.get("actor") or None,
            action=params.get("action") or None,
            target=params.get("target") or None,
            **window,
        ),
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    rest = {k: v for k, v in params.items() if v and k != "page"}
    return await render(
        request,
        "audit.html",
        web,
        entries=entries,
        total=total,
        params=params,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        rest=urlencode(rest),
        today=date.today().isoformat(),
    )
