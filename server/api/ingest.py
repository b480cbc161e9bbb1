"""Ingest counters (admin, ops)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from server.api.deps import RuntimeDep, require_role
from server.api.schemas import IngestStatsPublic
from server.db.models import Role
from server.services.users import Principal

__all__ = ["router"]

router = APIRouter(tags=["ingest"])


@router.get("/ingest/stats", response_model=IngestStatsPublic)
async def ingest_stats(
    runtime: RuntimeDep, _user: Annotated[Principal, require_role(Role.OPS)]
) -> IngestStatsPublic:
    """Messages received, stored, duplicates, malformed by reason, batches, last batch latency."""
    return IngestStatsPublic(**runtime.stats.snapshot(), mqtt_connected=runtime.mqtt_connected)
