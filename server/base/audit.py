"""The append-only, hash-chained audit log: who did what, to what, when, with which result.

:func:`record` adds a row to the caller's transaction (it does not commit): an audit row is
committed together with the change it describes, or not at all. Rows are inserted *unsealed*
(``chain_seq`` and ``hash`` NULL) so writers never contend for the chain head; :func:`seal`
(a server task every ``auth.audit_seal_interval`` seconds, and before every verify) numbers them
1, 2, 3 … in id order under a lock and sets::

    hash = sha256(prev_hash + canonical_json({chain_seq, id, ts, actor, action, target, detail, result}))

with ``prev_hash`` = 64 zeros for entry 1. :func:`verify` recomputes the chain: an altered row
breaks its own hash, a removed row leaves a gap in ``chain_seq``, a re-numbered or re-ordered
row breaks the hash (``chain_seq`` is hashed). Anyone who can write the database can rebuild the
whole chain, and removing the newest entries leaves no gap: both are caught only against a
record of the head kept outside the database — the signed anchors of
:mod:`server.anchors.anchor`, which ``verify`` checks through ``watch`` and ``last_seq``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from server.db.models import AuditEntry
from server.db.types import utcnow

__all__ = [
    "GENESIS",
    "AuditFilter",
    "ChainHead",
    "ChainProblem",
    "VerifyReport",
    "entry_hash",
    "hash_at",
    "head",
    "query",
    "record",
    "seal",
    "verify",
]

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
_LOCK_KEY = 0x0F1EE7CA4E  # pg_advisory_xact_lock key of the chain head (any constant will do)
_BATCH = 5000
_COLUMNS = (
    AuditEntry.id,
    AuditEntry.chain_seq,
    AuditEntry.hash,
    AuditEntry.ts,
    AuditEntry.actor,
    AuditEntry.action,
    AuditEntry.target,
    AuditEntry.detail,
    AuditEntry.result,
)


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


# --- the chain ---------------------------------------------------------------------------------


def entry_hash(
    prev_hash: str,
    *,
    chain_seq: int,
    id: int,
    ts: datetime,
    actor: str,
    action: str,
    target: str | None,
    detail: dict[str, Any],
    result: str,
) -> str:
    """The hash of one entry given the previous entry's hash (canonical JSON: sorted keys, no
    spaces, UTC time with microseconds — the same bytes on SQLite and PostgreSQL)."""
    canonical = json.dumps(
        {
            "chain_seq": chain_seq,
            "id": id,
            "ts": ts.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "target": target,
            "detail": detail,
            "result": result,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def _hash_row(prev_hash: str, row: Any, chain_seq: int) -> str:
    return entry_hash(
        prev_hash,
        chain_seq=chain_seq,
        id=row.id,
        ts=row.ts,
        actor=row.actor,
        action=row.action,
        target=row.target,
        detail=row.detail,
        result=row.result,
    )


def _postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def _lock(session: AsyncSession) -> None:
    """Serialise sealers (and verifiers) for the rest of this transaction."""
    if _postgres(session):
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    else:
        # SQLite: a write (matching no row) takes the database's write lock now, before the
        # head is read, so two sealers cannot both extend the same head
        await session.execute(update(AuditEntry).where(AuditEntry.id == -1).values(hash=None))


class ChainHead(NamedTuple):
    """The newest sealed entry's number and hash (``0`` and :data:`GENESIS` for an empty chain)."""

    chain_seq: int
    hash: str


async def head(session: AsyncSession) -> ChainHead:
    """The stored head of the chain, as it is (not verified: :func:`verify` does that)."""
    row = (
        await session.execute(
            select(AuditEntry.chain_seq, AuditEntry.hash)
            .where(AuditEntry.chain_seq.is_not(None))
            .order_by(AuditEntry.chain_seq.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return ChainHead(0, GENESIS)
    return ChainHead(row[0] or 0, row[1] or GENESIS)


async def hash_at(session: AsyncSession, chain_seq: int) -> str | None:
    """The stored hash of entry ``chain_seq``; None when there is no such entry."""
    return await session.scalar(select(AuditEntry.hash).where(AuditEntry.chain_seq == chain_seq))


async def seal(session: AsyncSession, *, batch_size: int = _BATCH) -> int:
    """Chain every unsealed entry, in id order, and commit; returns how many were sealed."""
    if await session.scalar(select(AuditEntry.id).where(AuditEntry.chain_seq.is_(None)).limit(1)) is None:
        await session.rollback()
        return 0  # nothing to do: do not take the lock (SQLite: the database's write lock)
    await _lock(session)
    seq, prev = await head(session)
    sealed = 0
    while True:
        rows = (
            await session.execute(
                select(*_COLUMNS)
                .where(AuditEntry.chain_seq.is_(None))
                .order_by(AuditEntry.id)
                .limit(batch_size)
            )
        ).all()
        if not rows:
            break
        params = []
        for row in rows:
            seq += 1
            prev = _hash_row(prev, row, seq)
            params.append({"id": row.id, "chain_seq": seq, "hash": prev})
        await session.execute(update(AuditEntry), params)  # bulk UPDATE by primary key
        sealed += len(rows)
    await session.commit()
    return sealed


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """The first bad entry: ``kind`` is ``altered``, ``missing`` or ``malformed``."""

    kind: str
    chain_seq: int
    entry_id: int | None
    message: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    entries: int  # sealed entries checked (up to the first problem)
    head_seq: int
    head_hash: str  # record it elsewhere: a later chain must pass through it
    sealed_now: int  # entries the seal before the walk added
    problem: ChainProblem | None
    # the highest chain_seq stored, whatever the walk found (an anchor above it: entries removed)
    last_seq: int = 0
    # the verified hash at each ``watch``ed chain_seq the walk reached (checked against anchors)
    watched: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is None:
            return f"audit log intact: {self.entries} entries (head #{self.head_seq} {self.head_hash})"
        return f"audit log TAMPERED: {self.problem.message}"


async def verify(
    session: AsyncSession, *, batch_size: int = _BATCH, watch: Collection[int] = ()
) -> VerifyReport:
    """Seal what is unsealed, then walk the chain from entry 1 and report the first problem.
    The verified hashes at the ``watch`` numbers (anchored heads) come back in ``watched``."""
    sealed_now = await seal(session, batch_size=batch_size)
    if _postgres(session):
        await _lock(session)  # no seal extends the chain during the walk (SQLite: WAL snapshot)
    try:
        return await _walk(session, batch_size, sealed_now, frozenset(watch))
    finally:
        await session.rollback()


async def _walk(
    session: AsyncSession, batch_size: int, sealed_now: int, watch: frozenset[int] = frozenset()
) -> VerifyReport:
    expected, prev = 1, GENESIS
    watched: dict[int, str] = {}
    last_seq = await session.scalar(select(func.max(AuditEntry.chain_seq))) or 0

    def report(problem: ChainProblem | None) -> VerifyReport:
        return VerifyReport(expected - 1, expected - 1, prev, sealed_now, problem, last_seq, watched)

    stray = await session.scalar(
        select(func.min(AuditEntry.id)).where(AuditEntry.chain_seq.is_(None), AuditEntry.hash.is_not(None))
    )
    last = 0
    while True:
        rows = (
            await session.execute(
                select(*_COLUMNS)
                .where(AuditEntry.chain_seq > last)
                .order_by(AuditEntry.chain_seq)
                .limit(batch_size)
            )
        ).all()
        if not rows:
            break
        for row in rows:
            if row.chain_seq != expected:
                return report(
                    ChainProblem(
                        "missing",
                        expected,
                        None,
                        f"entry #{expected} is missing (the chain jumps to #{row.chain_seq}, id {row.id}): "
                        "entries were removed or re-numbered",
                    )
                )
            if row.hash != _hash_row(prev, row, expected):
                return report(
                    ChainProblem(
                        "altered",
                        expected,
                        row.id,
                        f"entry #{expected} (id {row.id}, {row.action} by {row.actor}) does not match its "
                        "hash: the entry, or its hash, was changed after it was sealed",
                    )
                )
            prev = row.hash
            if expected in watch:
                watched[expected] = prev
            expected += 1
        last = rows[-1].chain_seq
    if stray is not None:
        return report(
            ChainProblem(
                "malformed",
                expected,
                stray,
                f"entry id {stray} has a hash but no chain number: it was taken out of the chain",
            )
        )
    return report(None)


# --- reading -----------------------------------------------------------------------------------


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
