"""The append-only audit log: who did what, to what, when, with which result.

:func:`record` adds a row to the caller's transaction (it does not commit): an audit row is
committed together with the change it describes, or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from server.db.models import AuditEntry
from server.db.types import utcnow

__all__ = ["AuditFilter", "query", "record"]


def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    result: str = "ok",
    ts: datetime | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        ts=ts or utcnow(), actor=actor, action=action, target=target, detail=detail or {}, result=result
    )
    session.add(entry)
    return entry


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def query(
    session: AsyncSession, where: AuditFilter, *, limit: int = 100, offset: int = 0
) -> tuple[list[AuditEntry], int]:
    """Entries matching ``where``, newest first, and the total count."""
    conditions: list[ColumnElement[bool]] = []
    if where.actor is not None:
        conditions.append(AuditEntry.actor == where.actor)
    if where.action is not None:
        conditions.append(AuditEntry.action == where.action)
    if where.target is not None:
        conditions.append(AuditEntry.target == where.target)
    if where.since is not None:
        conditions.append(AuditEntry.ts >= where.since)
    if where.until is not None:
        conditions.append(AuditEntry.ts < where.until)
    total = await session.scalar(select(func.count()).select_from(AuditEntry).where(*conditions))
    rows = await session.scalars(
        select(AuditEntry)
        .where(*conditions)
        .order_by(AuditEntry.ts.desc(), AuditEntry.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total or 0
