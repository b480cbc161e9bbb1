"""A clock for simulated equipment that can run faster than real time.

    clock = ScaledClock(speed=60)          # one real second = one simulated minute
    PrinterPlugin(device_id, options, clock=clock)
    AgentRuntime(settings, clock=clock, command_clock=SystemClock())

Device timestamps (``ts`` of every up-message) follow this clock, starting at the real time of
creation; commands keep being checked against the wall clock (``command_clock``), since the
server signs them with real validity windows.

For a whole simulated system (``fleetcare sim run --scenario``) use :class:`AnchoredClock`
instead, for the equipment *and* as the agents' ``command_clock``: it is anchored to the wall
clock (``sim_now = epoch + (time.time() - real_anchor) * speed``), the same formula the server
uses with a ``[simulation]`` settings section (``server/clock.py``), so devices, server and
behaviours share one simulated time line, even across processes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from agent.clock import SystemClock

__all__ = ["AnchoredClock", "ScaledClock", "SystemClock"]


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


class AnchoredClock:
    """Simulated time anchored to the wall clock: ``epoch`` at Unix time ``real_anchor``, then
    ``speed`` times faster. :meth:`rebase` changes the speed from now on (time stays continuous),
    so a run can set up at real speed and then accelerate; sleepers notice within a quarter
    of a real second."""

    MAX_REAL_NAP = 0.25  # a sleeper re-reads the clock at least this often (real seconds)

    def __init__(self, speed: float, epoch: datetime, real_anchor: float | None = None) -> None:
        if epoch.tzinfo is None:
            raise ValueError("epoch must be timezone-aware")
        self._check(speed)
        self.speed = speed
        self.epoch = epoch.astimezone(UTC)
        self.real_anchor = time.time() if real_anchor is None else real_anchor

    @staticmethod
    def _check(speed: float) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be > 0, got {speed!r}")

    def now(self) -> datetime:
        return self.epoch + timedelta(seconds=(time.time() - self.real_anchor) * self.speed)

    def rebase(self, speed: float) -> None:
        """Run at ``speed`` from now on: ``epoch`` becomes now, ``real_anchor`` the wall clock."""
        self._check(speed)
        real = time.time()
        self.epoch = self.epoch + timedelta(seconds=(real - self.real_anchor) * self.speed)
        self.real_anchor, self.speed = real, speed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        target = self.now() + timedelta(seconds=seconds)
        while True:
            left = (target - self.now()).total_seconds()
            if left <= 0:
                return
            await asyncio.sleep(min(left / self.speed, self.MAX_REAL_NAP))
