"""``GET /api/v1/health``: the only endpoint without authentication."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server.api.deps import RuntimeDep
from server.api.schemas import HealthPublic

__all__ = ["router"]

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
async def health(runtime: RuntimeDep, response: Response) -> HealthPublic:
    """Database reachable and broker connected. 503 when the database is not reachable."""
    try:
        async with asyncio.timeout(2), runtime.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        db_ok = True
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        logger.warning("health: database check failed: %s", exc)
        db_ok = False
    mqtt_ok = runtime.mqtt_connected
    if not db_ok:
        response.status_code = 503
    return HealthPublic(status="ok" if db_ok and mqtt_ok else "degraded", db=db_ok, mqtt=mqtt_ok)
