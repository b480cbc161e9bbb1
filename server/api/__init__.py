"""The HTTP API under ``/api/v1``: one router per resource."""

from fastapi import APIRouter

from server.api import audit, commands, devices, health, ingest

__all__ = ["API_PREFIX", "api_router"]

API_PREFIX = "/api/v1"


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    for module in (health, devices, commands, audit, ingest):
        router.include_router(module.router)
    return router
