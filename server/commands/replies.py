"""The device's replies to a command: applying each to the command's state (late, duplicated and
reordered ones included), its output, and the listings of replies and of a device's commands."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import protocol
from server import fleet
from server.base import audit
from server.commands.states import CANCELLED_REASON, S, transition
from server.db.dialect import insert_ignore
from server.db.models import Command, CommandReply

__all__ = [
    "apply_rejected_event",
    "apply_reply",
    "list_device_commands",
    "list_replies",
    "output_chunks",
    "output_text",
]

logger = logging.getLogger(__name__)


async def output_chunks(session: AsyncSession, command_id: str) -> dict[int, str]:
    """The ``output`` replies' text by chunk number (a chunk delivered twice counts once)."""
    rows = await session.execute(
        select(CommandReply.device_seq, CommandReply.payload)
        .where(CommandReply.command_id == command_id, CommandReply.type == protocol.ReplyType.OUTPUT.value)
        .order_by(CommandReply.device_seq)
    )
    chunks: dict[int, str] = {}
    for seq, payload in rows:
        number = payload.get("chunk")
        chunks.setdefault(int(number) if number is not None else -seq, str(payload.get("output", "")))
    return chunks


async def output_text(session: AsyncSession, command_id: str) -> str:
    chunks = await output_chunks(session, command_id)
    return "".join(chunks[number] for number in sorted(chunks, key=lambda n: (n < 0, abs(n))))


async def apply_reply(
    session: AsyncSession, device_id: str, reply: protocol.Reply, received_at: datetime
) -> str | None:
    """Store a device's reply and move its command; return the command id if anything changed."""
    command = await session.get(Command, reply.command_id)
    if command is None or command.device_id != device_id:
        # a reply from another device is never allowed to touch a command
        logger.warning(
            "reply from %s for unknown command %r (type %s) ignored", device_id, reply.command_id, reply.type
        )
        return None
    payload = reply.model_dump(mode="json", exclude={"v", "device_id", "kind"})
    await session.execute(
        insert_ignore(session, CommandReply).values(
            command_id=command.id,
            device_seq=reply.seq,
            type=reply.type.value,
            ts=reply.ts,
            received_at=received_at,
            payload=payload,
        )
    )
    kind = protocol.ReplyType
    moved = False
    if reply.type in (kind.ACCEPTED, kind.PROGRESS, kind.OUTPUT):
        moved = await transition(session, command.id, S.ACCEPTED, accepted_at=received_at)
    elif reply.type is kind.REJECTED:
        moved = await transition(
            session, command.id, S.REJECTED, finished_at=received_at, ok=False, reason=reply.reason or None
        )
    elif reply.type in (kind.RESULT, kind.ERROR):
        ok = reply.type is kind.RESULT and bool(reply.ok)
        output = reply.output or await output_text(session, command.id)
        target = S.SUCCEEDED if ok else S.FAILED
        if reply.type is kind.ERROR and reply.reason == CANCELLED_REASON:
            target = S.CANCELLED
        moved = await transition(
            session,
            command.id,
            target,
            finished_at=received_at,
            ok=ok,
            reason=reply.reason or None,
            output=output,
            data=reply.data,
        )
        if moved:
            audit.record(
                session,
                actor=f"device:{device_id}",
                action="command.finished",
                target=f"device:{device_id}",
                detail={
                    "command_id": command.id,
                    "action": command.action,
                    "issuer": command.issuer,
                    "session_id": command.session_id,
                    "cancel_requested_at": command.cancel_requested_at.isoformat()
                    if command.cancel_requested_at
                    else None,
                },
                result=target.value,
                ts=received_at,
            )
    if not moved:
        logger.debug(
            "reply %s for command %s in state %s: no transition", reply.type, command.id, command.state
        )
    return command.id


async def apply_rejected_event(
    session: AsyncSession, device_id: str, event: protocol.Event, received_at: datetime
) -> str | None:
    """A ``command.rejected`` event: one audit row, and the command (if known) moves to rejected."""
    data = event.data
    command_id = str(data.get("command_id") or "") or None
    reason = str(data.get("reason") or event.code or "") or None
    command = await session.get(Command, command_id) if command_id else None
    if command is not None and command.device_id != device_id:
        command = None
    audit.record(
        session,
        actor=f"device:{device_id}",
        action="command.rejected",
        target=f"device:{device_id}",
        detail={
            "command_id": command_id,
            "reason": reason,
            "issuer": command.issuer if command is not None else data.get("issuer"),
            "detail": event.detail,
        },
        result="rejected",
        ts=received_at,
    )
    if command is None:
        return None
    await transition(session, command.id, S.REJECTED, finished_at=received_at, ok=False, reason=reason)
    return command.id


async def list_replies(session: AsyncSession, command_id: str) -> list[CommandReply]:
    rows = await session.scalars(
        select(CommandReply).where(CommandReply.command_id == command_id).order_by(CommandReply.device_seq)
    )
    return list(rows)


async def list_device_commands(
    session: AsyncSession, device_id: str, *, limit: int = 100, offset: int = 0
) -> tuple[list[Command], int]:
    """Commands sent to one device, newest first, and the total count."""
    await fleet.get_device(session, device_id)
    total = await session.scalar(
        select(func.count()).select_from(Command).where(Command.device_id == device_id)
    )
    rows = await session.scalars(
        select(Command)
        .where(Command.device_id == device_id)
        .order_by(Command.issued_at.desc(), Command.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total or 0
