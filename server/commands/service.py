"""Commands: sign, record, publish, follow the device's replies, expire.

States (``server.db.models.CommandState``), never moving backwards::

    queued ──PUBACK──▶ sent ──▶ accepted ──▶ succeeded | failed | timed_out | cancelled
       │                 │
       └────────┬────────┴──▶ rejected | expired (| succeeded | failed: a result implies acceptance)

A command is checked against the owner's policy as the device advertised it
(server/commands/policy.py) *before* it is signed: a refused one leaves no row behind.

Every transition is a compare-and-set ``UPDATE … WHERE state IN (allowed sources)``, so a
late, duplicated or reordered reply, or a PUBACK arriving after the device already answered,
can never move a command backwards. The helpers here join the caller's transaction; the
:class:`CommandService` methods commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import pydantic
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from server import fleet
from server.base import audit
from server.base.users import Principal
from server.commands import policy
from server.commands.files import FILE_FETCH, FetchedFile, assemble_file
from server.commands.replies import list_replies, output_chunks, output_text
from server.commands.states import S, transition
from server.db.models import TERMINAL_STATES, Command, RemoteSession
from server.db.types import utcnow
from server.errors import Conflict, InvalidInput, NotFound, ServerError, Unavailable

__all__ = ["MAX_ARGS_BYTES", "OVERSIZE_REASON", "CommandPublisher", "CommandService", "StreamItem"]

logger = logging.getLogger(__name__)

MAX_ARGS_BYTES = 32 * 1024
"""A command's ``args``, JSON-encoded: far above any action's real arguments (a path, a few
options), far below the protocol's payload limit, so the signed command always fits a publish."""

OVERSIZE_REASON = "PayloadTooLarge"
"""``reason`` of a stored command that exceeds the protocol's payload limit: failed, never sent."""


class CommandPublisher(Protocol):
    """What the command service needs from the broker link."""

    @property
    def connected(self) -> bool: ...

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish QoS 1; return once the broker acknowledged (PUBACK), else raise Unavailable."""
        ...


def _check_args_size(args: dict[str, Any]) -> None:
    """Refuse arguments too large to sign and publish, before anything is recorded."""
    try:
        size = len(json.dumps(args, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 form, no signature
        raise InvalidInput(
            "args: contains a lone surrogate, which has no UTF-8 encoding", field="args"
        ) from exc
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"args: not encodable as JSON ({exc})", field="args") from exc
    if size > MAX_ARGS_BYTES:
        raise InvalidInput(f"args: {size} bytes encoded, the limit is {MAX_ARGS_BYTES}", field="args")


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
        _check_args_size(args or {})
        async with self._sessions() as session:
            device = await fleet.get_device(session, device_id)
            remote = await session.get(RemoteSession, session_id) if session_id else None
            try:
                await policy.check_command(
                    session, principal, device, action, remote, now=utcnow(), args=args or {}
                )
            except ServerError as exc:
                # a refused attempt is part of the trail too: who tried what, and why it was refused
                await session.rollback()
                audit.record(
                    session,
                    actor=principal.actor,
                    action="command.refused",
                    target=f"device:{device_id}",
                    detail={"action": action, "args": args or {}, "session_id": session_id, "why": str(exc)},
                    result=type(exc).__name__.lower(),
                )
                await session.commit()
                raise
            try:
                signed = self._signer.sign(
                    device_id=device_id,
                    action=action,
                    args=args or {},
                    issuer=principal.name,
                    ttl=timeout,
                    session_id=session_id,
                    now=utcnow(),  # simulated time in accelerated runs (server/clock.py)
                )
            except pydantic.ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                field = ".".join(str(p) for p in err["loc"])
                raise InvalidInput(f"{field}: {err['msg']}", field=field) from exc
            wire = protocol.encode(signed)
            if len(wire) > protocol.MAX_PAYLOAD_BYTES:  # cannot happen within MAX_ARGS_BYTES; stays so
                raise InvalidInput(
                    f"args: the signed command is {len(wire)} bytes, over the protocol limit of "
                    f"{protocol.MAX_PAYLOAD_BYTES}",
                    field="args",
                )
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
                signed=wire.decode(),
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
        data = payload.encode()
        if len(data) > protocol.MAX_PAYLOAD_BYTES:
            # The broker would drop our connection ("oversize packet") at every attempt: fail it.
            logger.error(
                "command %s to %s is %d bytes, over the payload limit of %d: failed, not sent",
                command_id,
                device_id,
                len(data),
                protocol.MAX_PAYLOAD_BYTES,
            )
            async with self._sessions() as session:
                moved = await transition(
                    session, command_id, S.FAILED, finished_at=utcnow(), ok=False, reason=OVERSIZE_REASON
                )
                await session.commit()
            if moved:
                self.notify([command_id])
            return False
        self._publishing.add(command_id)
        try:
            await self._publisher.publish(protocol.command_topic(device_id), data)
        except Unavailable as exc:
            logger.warning("command %s to %s stays queued: %s", command_id, device_id, exc)
            return False
        finally:
            self._publishing.discard(command_id)
        async with self._sessions() as session:
            now = utcnow()
            moved = await transition(session, command_id, S.SENT, sent_at=now)
            if not moved:
                # The device's reply can be handled before this mark (a fast device, a loaded
                # server): the state has moved on, but the record must still say when it went out.
                await session.execute(
                    update(Command)
                    .where(Command.id == command_id, Command.sent_at.is_(None))
                    .values(sent_at=now)
                )
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

    @contextlib.contextmanager
    def watch(self, command_id: str) -> Iterator[asyncio.Event]:
        """An event :meth:`notify` sets whenever the command may have changed (a reply stored, a
        state moved). Clear it *before* reading the database, so no change is missed."""
        event = asyncio.Event()
        self._waiters.setdefault(command_id, []).append(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(command_id, [])
            if event in waiters:
                waiters.remove(event)
            if not waiters:
                self._waiters.pop(command_id, None)

    async def wait_for_result(self, command_id: str, timeout: float) -> Command:  # noqa: ASYNC109
        """The command once terminal, or as it is when ``timeout`` runs out.

        Woken by :meth:`notify` (called after each ingest commit and sweep), not by polling.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.watch(command_id) as event:
            while True:
                event.clear()
                command = await self.get(command_id)
                remaining = deadline - loop.time()
                if S(command.state) in TERMINAL_STATES or remaining <= 0:
                    return command
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)

    async def stream(
        self, command_id: str, *, after_seq: int | None = None, keepalive: float = 15.0
    ) -> AsyncIterator[StreamItem]:
        """The command's replies in device order as they are stored, then its terminal state.

        ``after_seq``: resume after this ``device_seq`` (SSE ``Last-Event-ID``). A reply that
        arrives late with a lower seq than one already streamed is still streamed once. Woken
        by :meth:`notify`; yields a ``keepalive`` item after ``keepalive`` seconds of silence.
        """
        await self.get(command_id)
        streamed: set[int] = set()
        with self.watch(command_id) as event:
            while True:
                event.clear()
                async with self._sessions() as session:
                    command = await session.get(Command, command_id)
                    replies = await list_replies(session, command_id)
                assert command is not None
                for reply in replies:
                    if reply.device_seq in streamed or (
                        after_seq is not None and reply.device_seq <= after_seq
                    ):
                        continue
                    streamed.add(reply.device_seq)
                    yield StreamItem(
                        reply.type, reply.device_seq, {"device_seq": reply.device_seq, **reply.payload}
                    )
                if S(command.state).terminal:
                    yield StreamItem("end", None, _summary(command))
                    return
                try:
                    await asyncio.wait_for(event.wait(), keepalive)
                except TimeoutError:
                    yield StreamItem("keepalive", None, {})

    async def output(self, command_id: str) -> str:
        """The command's output text: the result's, else its chunks re-assembled in order."""
        async with self._sessions() as session:
            command = await session.get(Command, command_id)
            if command is None:
                raise NotFound("command", command_id)
            if command.output:
                return command.output
            return await output_text(session, command_id)

    async def fetch_file(self, command_id: str) -> FetchedFile:
        """The file a ``file.fetch`` command brought back: base64 chunks re-assembled in chunk
        order and checked against the result's ``size`` and ``sha256``; :class:`Conflict` when
        the command has not succeeded, chunks are missing, or the check fails."""
        async with self._sessions() as session:
            command = await session.get(Command, command_id)
            if command is None:
                raise NotFound("command", command_id)
            if command.action != FILE_FETCH:
                raise Conflict(
                    f"command {command_id} is a {command.action!r}, not a {FILE_FETCH}: it brought no file"
                )
            if command.state != S.SUCCEEDED.value:
                hint = (
                    "try again once it finished"
                    if not S(command.state).terminal
                    else (command.reason or "no file")
                )
                raise Conflict(f"command {command_id} is {command.state}: {hint}")
            chunks = await output_chunks(session, command_id)
        return assemble_file(command_id, command.data or {}, chunks)

    async def cancel(self, principal: Principal, command_id: str) -> Command:
        """Sign a ``command.cancel`` for the command's device; the agent stops it and answers
        ``error``/``Cancelled`` (→ ``cancelled``). Audited as ``command.cancel_requested``."""
        command = await self.get(command_id)
        if S(command.state).terminal:
            raise Conflict(f"command {command_id} is already {command.state}: nothing to cancel")
        if command.action in protocol.CONTROL_ACTIONS:
            raise Conflict(
                f"command {command_id} is a control command ({command.action}): it cannot be cancelled"
            )
        cancel = await self.issue(
            principal, command.device_id, protocol.CANCEL_ACTION, {"command_id": command_id}
        )
        async with self._sessions() as session:
            await session.execute(
                update(Command)
                .where(Command.id == command_id, Command.cancel_requested_at.is_(None))
                .values(cancel_requested_at=cancel.issued_at)
            )
            audit.record(
                session,
                actor=principal.actor,
                action="command.cancel_requested",
                target=f"device:{command.device_id}",
                detail={"command_id": command_id, "cancel_command_id": cancel.id, "action": command.action},
                result="sent",
            )
            await session.commit()
        self.notify([command_id])
        return await self.get(command_id)

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


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One server-sent event: ``event`` is a reply type, ``end`` or ``keepalive``; ``seq`` the
    reply's device_seq (the SSE id)."""

    event: str
    seq: int | None
    data: dict[str, Any]


def _summary(command: Command) -> dict[str, Any]:
    return {
        "command_id": command.id,
        "state": command.state,
        "ok": command.ok,
        "reason": command.reason,
        "data": command.data,
        "finished_at": command.finished_at.isoformat() if command.finished_at else None,
    }
