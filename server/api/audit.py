"""The audit log, read-only (admin, ops)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from server.api.deps import SessionDep, require_role
from server.api.schemas import AuditEntryPublic, Page
from server.db.models import Role
from server.services import audit
from server.services.users import Principal

__all__ = ["router"]

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=Page[AuditEntryPublic])
async def list_audit(
    *,
    session: SessionDep,
    _user: Annotated[Principal, require_role(Role.OPS)],
    actor: Annotated[str | None, Query(max_length=256)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    target: Annotated[str | None, Query(max_length=256)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[AuditEntryPublic]:
    """Entries in [since, until), newest first."""
    rows, total = await audit.query(
        session,
        audit.AuditFilter(actor=actor, action=action, target=target, since=since, until=until),
        limit=limit,
        offset=offset,
    )
    return Page(
        items=[AuditEntryPublic.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )
