"""The console's pages, one module per resource as in ``server/api/``: sign-in, the dashboard
(KPIs), the fleet, a device, the incident queue, an incident (with its knowledge suggestions), a remote session,
its commands, the audit log. Each asks the permissions table (``server.base.permissions``) and
calls the services the API calls — never an API handler."""

from __future__ import annotations

from fastapi import APIRouter

from server.web.pages import (
    audit,
    commands,
    devices,
    fleet,
    incidents,
    knowledge_page,
    kpis,
    queue,
    session_list,
    sessions,
    signin,
)

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
for module in (
    signin,
    kpis,
    fleet,
    devices,
    queue,
    incidents,
    session_list,
    sessions,
    commands,
    knowledge_page,
    audit,
):
    router.include_router(module.router)
