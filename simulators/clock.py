"""A clock for simulated equipment that can run faster than real time.

    clock = ScaledClock(speed=60)          # one real second = one simulated minute
    PrinterPlugin(device_id, options, clock=clock)
    AgentRuntime(settings, clock=clock, command_clock=SystemClock())

Device timestamps (``ts`` of every up-message) follow this clock, starting at the real time of
creation; commands keep being checked against the wall clock (``command_clock``), since the
server signs them with real validity windows.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from agent.clock import SystemClock

__all__ = ["ScaledClock", "SystemClock"]


class ScaledClock:
    """``now()`` advances ``speed`` times faster than real time; ``sleep(s)`` takes ``s / speed``."""

    def __init__(self, speed: float = 1.0, *, start: datetime | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be > 0, got {speed!r}")
        if start is not None and start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.speed = speed
        self._start = (start or datetime.now(UTC)).astimezone(UTC)
        self._origin = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._origin) * self.speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)
