"""Ingest counters and the quarantined messages (admin, ops)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import func, select

from server.api.deps import RuntimeDep, SessionDep, require_role
from server.api.params import Count
from server.api.schemas import IngestStatsPublic, Page
from server.base.users import Principal
from server.db.models import QuarantinedMessage, Role

__all__ = ["router"]

router = APIRouter(tags=["ingest"])

Operator = Annotated[Principal, require_role(Role.OPS)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[Count, Query()]

SHOWN_PAYLOAD_BYTES = 4096
"""Of a quarantined payload (up to the protocol's 256 KiB); ``payload_size`` gives the whole."""


class QuarantinedMessagePublic(BaseModel):
    id: int
    received_at: datetime
    topic: str
    device_id: str | None  # from the topic, when it has one
    seq: int | None  # null when the message had none in range
    error: str  # the exception class
    reason: str
    payload: str  # the first SHOWN_PAYLOAD_BYTES bytes, as text (UTF-8) or base64
    payload_encoding: Literal["utf-8", "base64"]
    payload_size: int
    payload_truncated: bool


def _utf8(data: bytes, *, truncated: bool) -> str | None:
    """``data`` as text if it is UTF-8; a truncated one may end inside a character (up to 3
    bytes of it), which is dropped rather than turning the whole payload into base64."""
    for cut in range(4 if truncated else 1):
        try:
            return data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def _public(row: QuarantinedMessage) -> QuarantinedMessagePublic:
    shown = row.payload[:SHOWN_PAYLOAD_BYTES]
    text = _utf8(shown, truncated=len(row.payload) > SHOWN_PAYLOAD_BYTES)
    encoding: Literal["utf-8", "base64"] = "utf-8"
    if text is None:
        text, encoding = base64.b64encode(shown).decode("ascii"), "base64"
    return QuarantinedMessagePublic(
        id=row.id,
        received_at=row.received_at,
        topic=row.topic,
        device_id=row.device_id,
        seq=row.seq,
        error=row.error,
        reason=row.reason,
        payload=text,
        payload_encoding=encoding,
        payload_size=len(row.payload),
        payload_truncated=len(row.payload) > SHOWN_PAYLOAD_BYTES,
    )


@router.get("/ingest/stats", response_model=IngestStatsPublic)
async def ingest_stats(runtime: RuntimeDep, _user: Operator) -> IngestStatsPublic:
    """Messages received, stored, duplicates, malformed / refused / quarantined by reason,
    batches, last batch latency."""
    return IngestStatsPublic(**runtime.stats.snapshot(), mqtt_connected=runtime.mqtt_connected)


@router.get("/ingest/quarantine", response_model=Page[QuarantinedMessagePublic])
async def ingest_quarantine(
    *,
    session: SessionDep,
    _user: Operator,
    device: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[QuarantinedMessagePublic]:
    """Messages whose handling raised something unexpected, newest first: kept as received,
    with the error, so an operator (or a developer) can see what broke and why."""
    where = [QuarantinedMessage.device_id == device] if device is not None else []
    total = await session.scalar(select(func.count()).select_from(QuarantinedMessage).where(*where))
    rows = await session.scalars(
        select(QuarantinedMessage)
        .where(*where)
        .order_by(QuarantinedMessage.received_at.desc(), QuarantinedMessage.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return Page(items=[_public(row) for row in rows], total=total or 0, limit=limit, offset=offset)
