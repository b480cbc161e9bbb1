"""The HTTP API under ``/api/v1``: one router per resource."""

from fastapi import APIRouter, Depends

from server.api import (
    audit,
    auth,
    commands,
    device_access,
    devices,
    forecast,
    guides,
    health,
    ingest,
    kpis,
    rules,
    sessions,
)
from server.api import customers as customers_api
from server.api import incidents as incidents_api
from server.api import knowledge as knowledge_api
from server.api import users as users_api
from server.api.query_guard import refuse_unknown_query
from server.api.text_guard import refuse_nul

__all__ = ["API_PREFIX", "api_router"]

API_PREFIX = "/api/v1"


def api_router() -> APIRouter:
    # server/api/text_guard.py, server/api/query_guard.py
    router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(refuse_nul), Depends(refuse_unknown_query)])
    for module in (health, devices, device_access, commands, audit, ingest, rules, forecast, kpis):
        router.include_router(module.router)
    for module in (incidents_api, customers_api):  # incidents, customers and sites
        router.include_router(module.router)
    for module in (auth, users_api, sessions, guides, knowledge_api):  # sign-in, users, sessions, guides, KB
        router.include_router(module.router)
    return router
