"""Replay quarantined up-messages once the defect that quarantined them is fixed.

A message is quarantined when its handling raised something unexpected (a decoder bug, a row
the database refused, a writer crash: server/ingest/consumer.py); it is kept as it arrived,
topic and bytes. After an upgrade, ``fleetcare server quarantine replay`` runs each one through
the same decode and write path as live ingest, one message per transaction:

* stored (or already stored: the idempotency key ``(device_id, seq)`` makes a replay safe to
  repeat) → the quarantine row is deleted, and the replay audited;
* still failing → the row stays, its ``error`` and ``reason`` updated to the new failure;
* from a revoked or retired device → the row stays (``refused``): ingest would refuse it too.

Nothing is ever lost by a replay: a row is deleted only in the transaction after its message
was committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from server.base import audit
from server.db.models import QuarantinedMessage
from server.incidents import IncidentTracker
from server.ingest.consumer import MAX_REASON_CHARS
from server.ingest.writer import BatchWriter, Decoded

__all__ = ["ReplayOutcome", "ReplayResult", "replay_quarantined"]

ReplayOutcome = Literal["stored", "duplicate", "refused", "malformed", "failed"]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    id: int
    topic: str
    outcome: ReplayOutcome
    detail: str

    @property
    def resolved(self) -> bool:
        return self.outcome in ("stored", "duplicate")


async def _rows(session: AsyncSession, ids: Sequence[int] | None, limit: int) -> list[QuarantinedMessage]:
    query = select(QuarantinedMessage).order_by(QuarantinedMessage.id).limit(limit)
    if ids is not None:
        query = query.where(QuarantinedMessage.id.in_(ids))
    return list(await session.scalars(query))


async def replay_quarantined(
    sessions: async_sessionmaker[AsyncSession],
    *,
    ids: Sequence[int] | None = None,
    limit: int = 10_000,
    actor: str,
    incidents: IncidentTracker | None = None,
    on_result: Callable[[ReplayResult], None] | None = None,
) -> list[ReplayResult]:
    """Replay the quarantined messages ``ids`` (default: the oldest ``limit``), in id order."""
    async with sessions() as session:
        rows = await _rows(session, ids, limit)
        session.expunge_all()
    writer = BatchWriter(sessions, incidents=incidents)
    refused = await writer.refused_devices()
    results: list[ReplayResult] = []
    for row in rows:
        result = await _replay_one(sessions, writer, row, refused, actor)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


async def _replay_one(
    sessions: async_sessionmaker[AsyncSession],
    writer: BatchWriter,
    row: QuarantinedMessage,
    refused: dict[str, str],
    actor: str,
) -> ReplayResult:
    def keep(outcome: ReplayOutcome, exc: BaseException | str) -> ReplayResult:
        detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        return ReplayResult(row.id, row.topic, outcome, detail[:MAX_REASON_CHARS])

    try:
        message = protocol.decode_uplink(row.topic, row.payload)
    except (protocol.DecodeError, protocol.TopicError) as exc:
        result = keep("malformed", exc)
    except Exception as exc:  # the decoder's own bug, as at ingest: reported, kept
        result = keep("failed", exc)
    else:
        reason = refused.get(message.device_id)
        if reason is not None:
            return keep("refused", f"device {message.device_id} is {reason}: ingest refuses its messages")
        try:
            outcome = await writer.write([Decoded(message, row.received_at, row.topic, row.payload)])
        except Exception as exc:  # still failing: the row stays, with the new reason
            result = keep("failed", exc)
        else:
            stored: ReplayOutcome = "stored" if outcome.stored else "duplicate"
            async with sessions() as session:
                await session.execute(delete(QuarantinedMessage).where(QuarantinedMessage.id == row.id))
                audit.record(
                    session,
                    actor=actor,
                    action="ingest.quarantine_replayed",
                    target=f"quarantine:{row.id}",
                    detail={"topic": row.topic, "seq": message.seq, "outcome": stored, "error": row.error},
                )
                await session.commit()
            return ReplayResult(row.id, row.topic, stored, f"{message.kind} seq {message.seq}")
    try:
        async with sessions() as session:
            await session.execute(
                update(QuarantinedMessage)
                .where(QuarantinedMessage.id == row.id)
                .values(error=result.detail.split(":", 1)[0][:256], reason=result.detail)
            )
            await session.commit()
    except SQLAlchemyError:
        pass  # the row keeps its old reason; the result still says what happened now
    return result
