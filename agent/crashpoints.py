"""Documented fault-injection points: the agent kills itself (SIGKILL) where a test says.

``FLEETCARE_AGENT_CRASH_POINT=<point>`` in the agent's environment makes the process send
itself SIGKILL the first time it reaches that point: no ``finally``, no goodbye, no flush, the
same as ``kill -9`` or a power-less crash of the process at exactly that instant. It is how
tests/integration/test_agent_inbox.py proves that a command is neither lost nor run twice
(docs/agent.md, "Command inbox"). Unset (always, in production) each point costs one lookup in
``os.environ``.

Points, in the order a command meets them:

``before_ack``
    the command is committed to the inbox, its PUBACK not yet sent (agent/link.py): the broker
    still holds it and redelivers it after the restart, while the inbox replays it too;
``after_receive``
    the PUBACK is sent, the guard has not looked at the command yet (agent/runtime.py);
``after_execute_before_reply``
    the action's handler returned, its result is not queued yet (agent/actions/executor.py).
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_POINTS", "CRASH_POINT_ENV", "crash_point"]

CRASH_POINT_ENV = "FLEETCARE_AGENT_CRASH_POINT"

CRASH_POINTS = frozenset({"before_ack", "after_receive", "after_execute_before_reply"})


def crash_point(point: str) -> None:
    """SIGKILL this process if ``FLEETCARE_AGENT_CRASH_POINT`` names ``point``."""
    if point not in CRASH_POINTS:
        raise ValueError(f"unknown crash point {point!r}: one of {sorted(CRASH_POINTS)}")
    if os.environ.get(CRASH_POINT_ENV) != point:
        return
    # Straight to the descriptor: a logging handler's buffer would die with the process.
    os.write(2, f"fleetcare agent: crash point {point} reached: SIGKILL\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
