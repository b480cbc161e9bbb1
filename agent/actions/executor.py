"""Running one accepted command and answering it.

Replies, in order, all through the outbox (so they survive a lost connection or a restart):
``accepted``; any ``progress`` the handler reports; then either ``result(ok, output, data)`` or
``error(reason=<exception class>, output=<message>)``. A handler may stream with
``ctx.output(text)``: numbered ``output`` replies sent at once, paced by the outbox
(back-pressure). A returned output longer than one reply can hold (``protocol.Reply.output``:
8192 characters) goes as further ``output`` replies right before a ``result`` whose own output
is empty; the numbering runs on from the streamed chunks and the result's ``data`` carries
``chunks: n``. Outputs returned at the end are capped at ``max_output_chars``.

Cancel: :meth:`ActionExecutor.cancel` (``command.cancel``) ends a command with
``error(reason="Cancelled", output="cancelled by <issuer>")``; an agent shutting down ends the
running ones with ``error(reason="AgentStopped")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from agent.actions.registry import RegisteredAction
from agent.crashpoints import crash_point
from agent.errors import MessageTooLarge
from agent.plugin import ActionResult
from protocol import CONTROL_ACTIONS, Command, ReplyType

__all__ = ["CHUNK_CHARS", "ActionExecutor", "ReplySender"]

logger = logging.getLogger(__name__)

CHUNK_CHARS = 8192  # protocol.messages.Text max_length


class ReplySender(Protocol):
    def __call__(
        self,
        command_id: str,
        type: ReplyType,
        *,
        reason: str = "",
        ok: bool | None = None,
        output: str = "",
        data: Mapping[str, Any] | None = None,
        chunk: int | None = None,
        progress: float | None = None,
    ) -> None:
        """Queue one Reply for ``command_id``."""
        ...


def _clip(text: str, limit: int = CHUNK_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 15] + " …(truncated)"


class _Context:
    """The :class:`agent.plugin.ActionContext` handed to a handler."""

    def __init__(
        self,
        command: Command,
        device_id: str,
        now: Callable[[], datetime],
        send: ReplySender,
        room: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self._command = command
        self._device_id = device_id
        self._now = now
        self._send = send
        self._room = room
        self.chunks = 0  # output chunks sent so far; the end-of-run split continues the numbering

    @property
    def device_id(self) -> str:
        return self._device_id

    @property
    def command_id(self) -> str:
        return self._command.id

    @property
    def issuer(self) -> str:
        return self._command.issuer

    @property
    def session_id(self) -> str | None:
        return self._command.session_id

    def now(self) -> datetime:
        return self._now()

    async def progress(self, fraction: float, message: str = "") -> None:
        self._send(
            self.command_id, ReplyType.PROGRESS, progress=min(1.0, max(0.0, fraction)), output=_clip(message)
        )

    async def output(self, text: str) -> None:
        for start in range(0, len(text), CHUNK_CHARS):
            if self._room is not None:
                await self._room()
            self._send(
                self.command_id, ReplyType.OUTPUT, output=text[start : start + CHUNK_CHARS], chunk=self.chunks
            )
            self.chunks += 1


class ActionExecutor:
    """Runs accepted commands (at most ``max_concurrent`` at once; more wait for a slot after
    their ``accepted`` reply) and cancels them on request (``command.cancel``)."""

    def __init__(
        self,
        *,
        device_id: str,
        send: ReplySender,
        now: Callable[[], datetime],
        max_output_chars: int = 1024 * 1024,
        max_concurrent: int = 4,
        room: Callable[[], Awaitable[None]] | None = None,
        on_start: Callable[[Command], None] | None = None,
    ) -> None:
        """``on_start(command)`` runs right before the handler (it got its slot): the inbox
        records there that the action may have had effects (agent/inbox.py). If it raises, the
        handler does not run and the command ends in an ``error``."""
        self.device_id = device_id
        self._send = send
        self._now = now
        self.max_output_chars = max_output_chars
        self._slots = asyncio.Semaphore(max_concurrent)
        self._room = room
        self._on_start = on_start
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancelled_by: dict[str, str] = {}

    def spawn(
        self, group: asyncio.TaskGroup, command: Command, action: RegisteredAction, *, name: str
    ) -> None:
        """Start ``command`` in ``group``, cancellable by id from this moment on."""
        task = group.create_task(self.execute(command, action), name=name)
        self._tasks[command.id] = task
        task.add_done_callback(lambda _: self._forget(command.id, task))

    def _forget(self, command_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(command_id) is task:
            del self._tasks[command_id]
        self._cancelled_by.pop(command_id, None)

    def running(self) -> list[str]:
        """Ids of the commands started and not finished."""
        return [cid for cid, task in self._tasks.items() if not task.done()]

    def cancel(self, command_id: str, by: str) -> bool:
        """Stop a running command: it ends with ``error(reason="Cancelled")``. False if no
        command of that id is running (unknown, or already finished)."""
        task = self._tasks.get(command_id)
        if task is None or task.done() or command_id in self._cancelled_by:
            return False
        self._cancelled_by[command_id] = by
        task.cancel()
        return True

    async def execute(self, command: Command, action: RegisteredAction) -> None:
        """Run ``action`` for ``command`` (already through the guard) and queue every reply."""
        spec = action.spec
        self._send(command.id, ReplyType.ACCEPTED)
        ctx = _Context(command, self.device_id, self._now, self._send, self._room)
        try:
            # Control actions (cancel, consent) never wait behind the commands they control.
            slot = contextlib.nullcontext() if spec.name in CONTROL_ACTIONS else self._slots
            async with slot, asyncio.timeout(spec.timeout):
                if self._on_start is not None:
                    self._on_start(command)
                result = await spec.handler(command.args, ctx)
            if not isinstance(result, ActionResult):
                raise TypeError(
                    f"handler of {spec.name!r} returned {type(result).__name__}, not ActionResult"
                )
        except TimeoutError:
            logger.warning("command %s (%s) timed out after %ss", command.id, spec.name, spec.timeout)
            self._error(
                command.id, "TimeoutError", f"action {spec.name!r} did not finish within {spec.timeout:g}s"
            )
        except asyncio.CancelledError:
            by = self._cancelled_by.get(command.id)
            task = asyncio.current_task()
            if by is None or task is None or task.cancelling() > 1:
                self._error(command.id, "AgentStopped", "the agent stopped while the action was running")
                raise
            task.uncancel()  # the cancel was meant for this command only: end it normally
            logger.info("command %s (%s) cancelled by %s", command.id, spec.name, by)
            self._error(command.id, "Cancelled", f"cancelled by {by}")
        except Exception as exc:
            # The plugin boundary: a failing handler must not take the agent down.
            logger.warning("command %s (%s) failed: %r", command.id, spec.name, exc, exc_info=True)
            self._error(command.id, type(exc).__name__, str(exc) or type(exc).__name__)
        else:
            crash_point("after_execute_before_reply")
            self._result(command.id, result, ctx)

    def _error(self, command_id: str, reason: str, message: str) -> None:
        self._send(command_id, ReplyType.ERROR, reason=reason[:256], output=_clip(message))

    def _result(self, command_id: str, result: ActionResult, ctx: _Context) -> None:
        output = result.output
        if len(output) > self.max_output_chars:
            output = (
                output[: self.max_output_chars]
                + f"\n…(output truncated at {self.max_output_chars} characters)"
            )
        if len(output) > CHUNK_CHARS:
            for start in range(0, len(output), CHUNK_CHARS):
                self._send(
                    command_id, ReplyType.OUTPUT, output=output[start : start + CHUNK_CHARS], chunk=ctx.chunks
                )
                ctx.chunks += 1
            output = ""
        data = result.data
        if ctx.chunks:
            data = {**data, "chunks": ctx.chunks}
        try:
            self._send(command_id, ReplyType.RESULT, ok=result.ok, output=output, data=data)
        except MessageTooLarge as exc:
            self._error(command_id, "MessageTooLarge", f"the result's data is too large to send ({exc})")
        except ValueError as exc:  # pydantic: data that is not JSON-serialisable
            self._error(command_id, type(exc).__name__, f"the result's data cannot be sent: {exc}")
