"""Running one accepted command and answering it.

Replies, in order, all through the outbox (so they survive a lost connection or a restart):
``accepted``; any ``progress`` the handler reports; then either ``result(ok, output, data)`` or
``error(reason=<exception class>, output=<message>)``. An output longer than one reply can hold
(``protocol.Reply.output``: 8192 characters) goes as ``output`` replies numbered 0..n-1 just
before a ``result`` whose own output is empty. Outputs are capped at ``max_output_chars``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from agent.actions.registry import RegisteredAction
from agent.errors import MessageTooLarge
from agent.plugin import ActionResult
from protocol import Command, ReplyType

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
        self, device_id: str, command_id: str, now: Callable[[], datetime], send: ReplySender
    ) -> None:
        self._device_id = device_id
        self._command_id = command_id
        self._now = now
        self._send = send

    @property
    def device_id(self) -> str:
        return self._device_id

    @property
    def command_id(self) -> str:
        return self._command_id

    def now(self) -> datetime:
        return self._now()

    async def progress(self, fraction: float, message: str = "") -> None:
        self._send(
            self._command_id, ReplyType.PROGRESS, progress=min(1.0, max(0.0, fraction)), output=_clip(message)
        )


class ActionExecutor:
    def __init__(
        self,
        *,
        device_id: str,
        send: ReplySender,
        now: Callable[[], datetime],
        max_output_chars: int = 1024 * 1024,
    ) -> None:
        self.device_id = device_id
        self._send = send
        self._now = now
        self.max_output_chars = max_output_chars

    async def execute(self, command: Command, action: RegisteredAction) -> None:
        """Run ``action`` for ``command`` (already through the guard) and queue every reply."""
        spec = action.spec
        self._send(command.id, ReplyType.ACCEPTED)
        ctx = _Context(self.device_id, command.id, self._now, self._send)
        try:
            async with asyncio.timeout(spec.timeout):
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
            self._error(command.id, "Cancelled", "the agent stopped while the action was running")
            raise
        except Exception as exc:
            # The plugin boundary: a failing handler must not take the agent down.
            logger.warning("command %s (%s) failed: %r", command.id, spec.name, exc, exc_info=True)
            self._error(command.id, type(exc).__name__, str(exc) or type(exc).__name__)
        else:
            self._result(command.id, result)

    def _error(self, command_id: str, reason: str, message: str) -> None:
        self._send(command_id, ReplyType.ERROR, reason=reason[:256], output=_clip(message))

    def _result(self, command_id: str, result: ActionResult) -> None:
        output = result.output
        if len(output) > self.max_output_chars:
            output = (
                output[: self.max_output_chars]
                + f"\n…(output truncated at {self.max_output_chars} characters)"
            )
        if len(output) > CHUNK_CHARS:
            for number, start in enumerate(range(0, len(output), CHUNK_CHARS)):
                self._send(
                    command_id, ReplyType.OUTPUT, output=output[start : start + CHUNK_CHARS], chunk=number
                )
            output = ""
        try:
            self._send(command_id, ReplyType.RESULT, ok=result.ok, output=output, data=result.data)
        except MessageTooLarge as exc:
            self._error(command_id, "MessageTooLarge", f"the result's data is too large to send ({exc})")
        except ValueError as exc:  # pydantic: data that is not JSON-serialisable
            self._error(command_id, type(exc).__name__, f"the result's data cannot be sent: {exc}")
