"""Commands: sign, record, publish, follow the device's replies, expire.

States (``server.db.models.CommandState``), never moving backwards::

    queued ──PUBACK──▶ sent ──▶ accepted ──▶ succeeded | failed | timed_out
       │                 │
       └────────┬────────┴──▶ rejected | expired (| succeeded | failed: a result implies acceptance)

Every transition is a compare-and-set ``UPDATE … WHERE state IN (allowed sources)``, so a
late, duplicated or reordered reply, or a PUBACK arriving after the device already answered,
can never move a command backwards. The helpers here join the caller's transaction; the
:class:`CommandService` methods commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

import pydantic
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from server.db.dialect import insert_ignore
from server.db.models import TERMINAL_STATES, Command, CommandReply, CommandState
from server.db.types import utcnow
from server.errors import InvalidInput, NotFound, Unavailable
from server.services import audit, fleet
from server.services.users import Principal

__all__ = [
    "CommandPublisher",
    "CommandService",
    "apply_rejected_event",
    "apply_reply",
    "can_move",
    "list_device_commands",
    "list_replies",
    "transition",
]

logger = logging.getLogger(__name__)

S = CommandState
SOURCES: dict[CommandState, frozenset[CommandState]] = {
    S.SENT: frozenset({S.QUEUED}),
    S.ACCEPTED: frozenset({S.QUEUED, S.SENT}),
    S.REJECTED: frozenset({S.QUEUED, S.SENT}),
    S.SUCCEEDED: frozenset({S.QUEUED, S.SENT, S.ACCEPTED}),
    S.FAILED: frozenset({S.QUEUED, S.SENT, S.ACCEPTED}),
    S.EXPIRED: frozenset({S.QUEUED, S.SENT}),
    S.TIMED_OUT: frozenset({S.ACCEPTED}),
}


def can_move(source: CommandState, target: CommandState) -> bool:
    return source in SOURCES.get(target, frozenset())


class CommandPublisher(Protocol):
    """What the command service needs from the broker link."""

    @property
    def connected(self) -> bool: ...

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish QoS 1; return once the broker acknowledged (PUBACK), else raise Unavailable."""
        ...


async def transition(session: AsyncSession, command_id: str, target: CommandState, **values: Any) -> bool:
    """Move one command to ``target`` if its current state allows; True if it moved."""
    sources = [state.value for state in SOURCES[target]]
    result = await session.execute(
        update(Command)
        .where(Command.id == command_id, Command.state.in_(sources))
        .values(state=target.value, **values)
        .returning(Command.id)
    )
    return result.first() is not None


async def _output_chunks(session: AsyncSession, command_id: str) -> str:
    rows = await session.scalars(
        select(CommandReply.payload).where(
            CommandReply.command_id == command_id, CommandReply.type == protocol.ReplyType.OUTPUT.value
        )
    )
    chunks = sorted(rows, key=lambda payload: payload.get("chunk") or 0)
    return "".join(str(payload.get("output", "")) for payload in chunks)


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
        output = reply.output or await _output_chunks(session, command.id)
        target = S.SUCCEEDED if ok else S.FAILED
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
                detail={"command_id": command.id, "action": command.action, "issuer": command.issuer},
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


class CommandService:
    """Issues commands and tracks them until a terminal state; wakes waiters on every change."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publisher: CommandPublisher | None,
        signer: protocol.CommandSigner | None,
        *,
        default_timeout: float = 60.0,
        republish_after: float = 2.0,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._signer = signer
        self.default_timeout = default_timeout
        self._republish_after = timedelta(seconds=republish_after)
        self._waiters: dict[str, list[asyncio.Event]] = {}
        self._publishing: set[str] = set()

    # -- issuing -------------------------------------------------------------------------
    async def issue(
        self,
        principal: Principal,
        device_id: str,
        action: str,
        args: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        session_id: str | None = None,
    ) -> Command:
        if self._signer is None:
            raise Unavailable("commands are disabled: signing_key_file is not configured")
        timeout = timedelta(seconds=timeout_s if timeout_s is not None else self.default_timeout)
        async with self._sessions() as session:
            await fleet.get_device(session, device_id)
            try:
                signed = self._signer.sign(
                    device_id=device_id,
                    action=action,
                    args=args or {},
                    issuer=principal.name,
                    ttl=timeout,
                    session_id=session_id,
                )
            except pydantic.ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                field = ".".join(str(p) for p in err["loc"])
                raise InvalidInput(f"{field}: {err['msg']}", field=field) from exc
            row = Command(
                id=signed.id,
                device_id=device_id,
                action=signed.action,
                args=signed.args,
                issuer=signed.issuer,
                session_id=signed.session_id,
                state=S.QUEUED.value,
                issued_at=signed.issued_at,
                expires_at=signed.expires_at,
                deadline_at=signed.issued_at + timeout,
                signed=protocol.encode(signed).decode(),
            )
            session.add(row)
            audit.record(
                session,
                actor=principal.actor,
                action="command.sent",
                target=f"device:{device_id}",
                detail={
                    "command_id": signed.id,
                    "action": signed.action,
                    "args": signed.args,
                    "issuer": signed.issuer,
                    "session_id": signed.session_id,
                },
                result="recorded",
            )
            await session.commit()  # before publishing: a fast reply must find the command
        await self._publish(row.id, device_id, row.signed)
        return await self.get(row.id)

    async def _publish(self, command_id: str, device_id: str, payload: str) -> bool:
        if self._publisher is None or command_id in self._publishing:
            return False
        self._publishing.add(command_id)
        try:
            await self._publisher.publish(protocol.command_topic(device_id), payload.encode())
        except Unavailable as exc:
            logger.warning("command %s to %s stays queued: %s", command_id, device_id, exc)
            return False
        finally:
            self._publishing.discard(command_id)
        async with self._sessions() as session:
            moved = await transition(session, command_id, S.SENT, sent_at=utcnow())
            await session.commit()
        if moved:
            self.notify([command_id])
        return True

    # -- reading -------------------------------------------------------------------------
    async def get(self, command_id: str) -> Command:
        async with self._sessions() as session:
            command = await session.get(Command, command_id)
            if command is None:
                raise NotFound("command", command_id)
            return command

    async def wait_for_result(self, command_id: str, timeout: float) -> Command:  # noqa: ASYNC109
        """The command once terminal, or as it is when ``timeout`` runs out.

        Woken by :meth:`notify` (called after each ingest commit and sweep), not by polling.
        """
        event = asyncio.Event()
        self._waiters.setdefault(command_id, []).append(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                event.clear()
                command = await self.get(command_id)
                remaining = deadline - loop.time()
                if S(command.state) in TERMINAL_STATES or remaining <= 0:
                    return command
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
        finally:
            waiters = self._waiters.get(command_id, [])
            if event in waiters:
                waiters.remove(event)
            if not waiters:
                self._waiters.pop(command_id, None)

    def notify(self, command_ids: Iterable[str]) -> None:
        for command_id in command_ids:
            for event in self._waiters.get(command_id, ()):
                event.set()

    # -- sweeping ------------------------------------------------------------------------
    async def sweep(self, now: datetime | None = None) -> list[str]:
        """Expire and time out overdue commands; re-publish queued ones. Returns changed ids."""
        now = now or utcnow()
        changed: list[str] = []
        async with self._sessions() as session:
            for target, sources, column in (
                (S.EXPIRED, (S.QUEUED, S.SENT), Command.expires_at),
                (S.TIMED_OUT, (S.ACCEPTED,), Command.deadline_at),
            ):
                result = await session.execute(
                    update(Command)
                    .where(Command.state.in_([s.value for s in sources]), column <= now)
                    .values(state=target.value, finished_at=now)
                    .returning(Command.id, Command.device_id, Command.action, Command.issuer)
                )
                for command_id, device_id, action, issuer in result:
                    changed.append(command_id)
                    audit.record(
                        session,
                        actor="server",
                        action="command.finished",
                        target=f"device:{device_id}",
                        detail={"command_id": command_id, "action": action, "issuer": issuer},
                        result=target.value,
                        ts=now,
                    )
            await session.commit()
            queued = (
                await session.execute(
                    select(Command.id, Command.device_id, Command.signed).where(
                        Command.state == S.QUEUED.value,
                        Command.issued_at <= now - self._republish_after,
                        Command.expires_at > now,
                    )
                )
            ).all()
        if changed:
            logger.info("commands finished by the sweeper: %s", ", ".join(changed))
            self.notify(changed)
        if queued and self._publisher is not None and self._publisher.connected:
            for command_id, device_id, signed in queued:
                await self._publish(command_id, device_id, signed)
        return changed

    async def run_sweeper(self, interval: float) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # a database hiccup must not end the sweeper
                logger.exception("command sweep failed; retrying in %.1fs", interval)
            await asyncio.sleep(interval)


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
