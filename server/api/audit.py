"""The audit log, read-only (admin, ops), and the check of its hash chain (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

import protocol
from server.anchors import anchor as audit_anchor
from server.api.deps import RuntimeDep, SessionDep, require_role
from server.api.params import Count
from server.api.schemas import AuditEntryPublic, Page
from server.base import audit
from server.base.users import Principal
from server.db.models import Role
from server.kpi.export import parse_time

__all__ = ["router"]

router = APIRouter(tags=["audit"])


class ChainProblemPublic(BaseModel):
    kind: str  # altered | missing | malformed
    chain_seq: int
    entry_id: int | None
    message: str


class AnchorPublic(BaseModel):
    chain_seq: int
    hash: str
    at: datetime
    server: str


class AnchorProblemPublic(BaseModel):
    kind: str  # truncated | rewritten | forged
    line: int  # of the anchors file
    chain_seq: int | None  # the anchored entry (None: a forged line)
    hash: str | None  # the hash the anchor recorded
    found: str | None  # the chain's hash at chain_seq now (None: no such entry)
    message: str


class AnchorsPublic(BaseModel):
    file: str | None  # None: anchoring is not configured
    anchors: int  # anchors whose signature verified
    checked: int  # of those, compared with the chain
    newest: AnchorPublic | None
    problems: list[AnchorProblemPublic]
    warnings: list[str]


class AuditVerifyPublic(BaseModel):
    ok: bool  # the chain is intact and holds every anchored head
    entries: int
    head_seq: int
    head_hash: str
    sealed_now: int
    problem: ChainProblemPublic | None  # the chain's own first problem
    message: str
    anchors: AnchorsPublic  # the chain against the signed anchors kept outside the database


@router.get("/audit/verify", response_model=AuditVerifyPublic)
async def verify_audit(
    session: SessionDep, runtime: RuntimeDep, _admin: Annotated[Principal, require_role()]
) -> AuditVerifyPublic:
    """Seal pending entries, recompute the whole hash chain and compare it with the signed anchors
    of its head (server/anchors/anchor.py). ``ok: false`` names the first bad entry
    (altered, missing or taken out of the chain) in ``problem``, or the anchor the chain no
    longer holds (truncated, rewritten) or a forged anchor in ``anchors.problems``. Reads every
    entry: not for polling."""
    settings = runtime.settings
    key = audit_anchor.load_anchor_key(settings)
    keys = {protocol.key_id(key.public_key()): key.public_key()} if key is not None else {}
    check = await audit_anchor.verify_anchored(session, anchors=audit_anchor.anchor_file(settings), keys=keys)
    report, problem, found = check.chain, check.chain.problem, check.anchors
    return AuditVerifyPublic(
        ok=check.ok,
        entries=report.entries,
        head_seq=report.head_seq,
        head_hash=report.head_hash,
        sealed_now=report.sealed_now,
        problem=ChainProblemPublic(
            kind=problem.kind, chain_seq=problem.chain_seq, entry_id=problem.entry_id, message=problem.message
        )
        if problem
        else None,
        message=check.summary(),
        anchors=AnchorsPublic(
            file=str(found.source) if found.source is not None else None,
            anchors=found.anchors,
            checked=found.checked,
            newest=AnchorPublic(
                chain_seq=found.newest.chain_seq,
                hash=found.newest.hash,
                at=found.newest.at,
                server=found.newest.server,
            )
            if found.newest
            else None,
            problems=[
                AnchorProblemPublic(
                    kind=p.kind,
                    line=p.line,
                    chain_seq=p.chain_seq,
                    hash=p.hash,
                    found=p.found,
                    message=p.message,
                )
                for p in found.problems
            ],
            warnings=list(found.warnings),
        ),
    )


@router.get("/audit", response_model=Page[AuditEntryPublic])
async def list_audit(
    *,
    session: SessionDep,
    _user: Annotated[Principal, require_role(Role.OPS)],
    actor: Annotated[str | None, Query(max_length=256)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    target: Annotated[str | None, Query(max_length=256)] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="2026-01-01 (UTC midnight) or an ISO time")
    ] = None,
    until: Annotated[
        str | None, Query(max_length=64, description="2026-01-01 (UTC midnight) or an ISO time")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Count, Query()] = 0,
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
