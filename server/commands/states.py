"""The command state machine: which states a command may move to from which, and the
compare-and-set transition that never moves one backwards (see server/commands/service.py)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Command, CommandState

__all__ = ["CANCELLED_REASON", "SOURCES", "S", "can_move", "transition"]

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
    S.CANCELLED: frozenset({S.QUEUED, S.SENT, S.ACCEPTED}),
}

CANCELLED_REASON = "Cancelled"
"""The ``error`` reply's reason when the agent stopped a command on a ``command.cancel``."""


def can_move(source: CommandState, target: CommandState) -> bool:
    return source in SOURCES.get(target, frozenset())


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
