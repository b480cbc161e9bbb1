"""From a received command to its executor: inbox, guard, and what a crash left unanswered.

The runtime's ``commands`` task (:meth:`CommandIntake.run`). Each command payload the link
received was committed to the inbox by :meth:`CommandIntake.keep` before its PUBACK (agent/link.py
calls it) and queued here; it is checked by the guard through the inbox's claim (so the id
recorded in the replay cache belongs to its row), then run by the executor. Its inbox row is
marked ``started`` right before the handler runs (:meth:`started`) and ``done`` in the
transaction of its terminal reply (:meth:`reply`, the executor's reply sender). See agent/inbox.py
for the states and for what a restart does with each; :meth:`run` does it first, before any new
command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from agent.actions import ActionExecutor
from agent.crashpoints import crash_point
from agent.errors import AgentError
from agent.guard import CommandGuard, Rejection
from agent.inbox import INTERRUPTED_REASON, Inbox, InboxEntry, InboxState
from agent.replay import SqliteReplayCache
from agent.uplink import Uplink
from protocol import Command, ReplyType, Severity

__all__ = ["CommandIntake"]

logger = logging.getLogger(__name__)

_TERMINAL = frozenset({ReplyType.RESULT, ReplyType.ERROR, ReplyType.REJECTED})


class CommandIntake:
    def __init__(
        self,
        *,
        name: str,
        inbox: Inbox,
        guard: CommandGuard,
        replay: SqliteReplayCache,
        executor: ActionExecutor,
        uplink: Uplink,
        emit_event: Callable[..., None],
    ) -> None:
        self.name = name
        self.inbox = inbox
        self.guard = guard
        self.replay = replay
        self.executor = executor
        self.uplink = uplink
        self._emit_event = emit_event
        self._inbound: asyncio.Queue[InboxEntry] = asyncio.Queue()  # kept, not yet handled
        self._accepted: dict[str, int] = {}  # command id -> inbox row, until its terminal reply

    # -- the link's side ---------------------------------------------------------------------

    def keep(self, payload: bytes, redelivered: bool) -> None:
        """The link's hook, before the PUBACK: commit the command, then queue it (a redelivery
        of bytes already kept is dropped). InboxError: the link does not acknowledge it."""
        entry = self.inbox.keep(payload, redelivered=redelivered)
        if entry is None:
            logger.info("%s: a redelivered command is already in the inbox: acknowledged only", self.name)
            return
        self._inbound.put_nowait(entry)

    async def _injected(self, incoming: asyncio.Queue[bytes]) -> None:
        """Payloads put straight into ``link.incoming`` (tests, a link without the hook) go
        through the inbox like the link's own."""
        while True:
            payload = await incoming.get()
            try:
                self.keep(payload, False)
            except AgentError:
                logger.exception("%s: cannot store an injected command: dropped", self.name)

    # -- the commands task -------------------------------------------------------------------

    async def run(self, incoming: asyncio.Queue[bytes]) -> None:
        """Finish what the inbox holds from before, then handle commands as they come."""
        async with asyncio.TaskGroup() as running:
            self._resume(running)
            running.create_task(self._injected(incoming), name=f"{self.name}.commands.injected")
            while True:
                entry = await self._inbound.get()
                crash_point("after_receive")
                self._handle(running, entry)

    def _resume(self, running: asyncio.TaskGroup) -> None:
        """At start-up: finish what the inbox holds from before a crash. Not started: through
        the guard and run, once. Started: answered Interrupted, never run again."""
        try:
            self.inbox.prune()
            unfinished = self.inbox.unfinished()
        except AgentError:
            logger.exception(
                "%s: cannot read the command inbox: commands from before are not resumed", self.name
            )
            return
        if unfinished:
            logger.warning("%s: %d command(s) unfinished before the restart", self.name, len(unfinished))
        for entry in unfinished:
            if entry.state is InboxState.STARTED:
                self._interrupted(entry)
            else:
                self._handle(running, entry)

    def _handle(self, running: asyncio.TaskGroup, entry: InboxEntry) -> None:
        verdict = self.guard.inspect(entry.payload, replay_cache=self.inbox.claim(entry, self.replay))
        if isinstance(verdict, Rejection):
            self._report_rejection(verdict, entry)
            return
        command = verdict.command
        logger.info(
            "%s: command %s %s from %s accepted", self.name, command.id, command.action, command.issuer
        )
        self._accepted[command.id] = entry.id
        self.executor.spawn(running, command, verdict.action, name=f"{self.name}.command[{command.id}]")

    # -- the executor's side -----------------------------------------------------------------

    def started(self, command: Command) -> None:
        """Right before the handler runs: from now on a crash answers Interrupted."""
        entry_id = self._accepted.get(command.id)
        if entry_id is not None:
            self.inbox.mark_started(entry_id)

    def reply(self, command_id: str, type: ReplyType, **fields: Any) -> None:
        """The executor's replies; an accepted command's terminal one marks its inbox row done
        in the same transaction."""
        entry_id = self._accepted.get(command_id) if type in _TERMINAL else None
        also = None if entry_id is None else self.inbox.finisher(entry_id)
        self.uplink.reply(command_id, type, also=also, **fields)
        if entry_id is not None:
            del self._accepted[command_id]

    # -- answers without the executor --------------------------------------------------------

    def _interrupted(self, entry: InboxEntry) -> None:
        """A command whose action was running when the agent died: its effects are unknown, so it
        is not run again (it may not be idempotent); its one terminal reply says so."""
        assert entry.claimed_id is not None  # set when the guard accepted it
        logger.warning(
            "%s: command %s was running when the agent stopped: not run again, answered %s",
            self.name,
            entry.claimed_id,
            INTERRUPTED_REASON,
        )
        self.uplink.reply(
            entry.claimed_id,
            ReplyType.ERROR,
            reason=INTERRUPTED_REASON,
            output="the agent stopped (killed, crashed or lost power) while this action was running; "
            "it is not run again because it may already have had its effect: check the device",
            also=self.inbox.finisher(entry.id),
        )

    def _report_rejection(self, rejection: Rejection, entry: InboxEntry) -> None:
        logger.warning(
            "%s: command %s (%s) rejected: %s: %s",
            self.name,
            rejection.command_id or "?",
            rejection.action or "?",
            rejection.reason.value,
            rejection.detail,
        )
        detail = rejection.detail[:1024]
        finish = self.inbox.finisher(entry.id)
        if rejection.command_id is None:
            self.inbox.finish(entry.id)
        elif entry.state is InboxState.ACCEPTED:
            # Accepted before a restart (the server may have heard "accepted"), refused now (it
            # expired meanwhile, its consent ran out): the terminal reply must be an error.
            self.uplink.reply(
                rejection.command_id,
                ReplyType.ERROR,
                reason=rejection.reason.value,
                output=f"accepted before the agent restarted, not run: {detail}"[:1024],
                also=finish,
            )
        else:
            self.uplink.reply(
                rejection.command_id,
                ReplyType.REJECTED,
                reason=rejection.reason.value,
                output=detail,
                also=finish,
            )
        self._emit_event(
            "command.rejected",
            severity=Severity.WARNING,
            detail=f"{rejection.reason.value}: {detail}",
            data={
                "command_id": rejection.command_id,
                "action": rejection.action,
                "reason": rejection.reason.value,
                "issuer": rejection.issuer,
                "detail": detail,
            },
        )
