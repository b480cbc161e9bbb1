"""The audit log, read-only (admin, ops), and the check of its hash chain (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from server.api.deps import SessionDep, require_role
from server.api.schemas import AuditEntryPublic, Page
from server.db.models import Role
from server.kpi.export import parse_time
from server.services import audit
from server.services.users import Principal

__all__ = ["router"]

router = APIRouter(tags=["audit"])


class ChainProblemPublic(BaseModel):
    kind: str  # altered | missing | malformed
    chain_seq: int
    entry_id: int | None
    message: str


class AuditVerifyPublic(BaseModel):
    ok: bool
    entries: int
    head_seq: int
    head_hash: str  # keep a copy outside the database: a later chain must pass through it
    sealed_now: int
    problem: ChainProblemPublic | None
    message: str


@router.get("/audit/verify", response_model=AuditVerifyPublic)
async def verify_audit(
    session: SessionDep, _admin: Annotated[Principal, require_role()]
) -> AuditVerifyPublic:
    """Seal pending entries, then recompute the whole hash chain. ``ok: false`` names the first
    bad entry (altered, missing or taken out of the chain). Reads every entry: not for polling."""
    report = await audit.verify(session)
    problem = report.problem
    return AuditVerifyPublic(
        ok=report.ok,
        entries=report.entries,
        head_seq=report.head_seq,
        head_hash=report.head_hash,
        sealed_now=report.sealed_now,
        problem=ChainProblemPublic(
            kind=problem.kind, chain_seq=problem.chain_seq, entry_id=problem.entry_id, message=problem.message
        )
        if problem
        else None,
        message=report.summary(),
    )


@router.get("/audit", response_model=Page[AuditEntryPublic])
async def list_audit(
    *,
    session: SessionDep,
    _user: Annotated[Principal, require_role(Role.OPS)],
    actor: Annotated[str | None, Query(max_length=256)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    target: Annotated[str | None, Query(max_length=256)] = None,
    since: Annotated[str | None, Query(description="2026-01-01 (UTC midnight) or an ISO time")] = None,
    until: Annotated[str | None, Query(description="2026-01-01 (UTC midnight) or an ISO time")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[AuditEntryPublic]:
    """Entries in [since, until), newest first. A date means midnight UTC; a time without a
    zone is UTC."""
    window = {name: parse_time(value, name) for name, value in (("since", since), ("until", until)) if value}
    rows, total = await audit.query(
        session,
        audit.AuditFilter(actor=actor, action=action, target=target, **window),
        limit=limit,
        offset=offset,
    )
    return Page(
        items=[AuditEntryPublic.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )
