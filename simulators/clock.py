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

For a *reproducible* whole run use :class:`SteppedClock` (``clock = "stepped"`` in a scenario):
simulated time does not follow the wall clock at all; it moves only when the runner
(``simulators/run.py``) advances it, from one wake-up time to the next, and the sleepers due are
woken in a fixed order (time, then task name), each running until it sleeps again or ends. Real
time spent on network round trips, database commits or API calls then costs no simulated time.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from agent.clock import SystemClock

__all__ = [
    "EQUIPMENT",
    "PEOPLE",
    "AnchoredClock",
    "ScaledClock",
    "StepTimeout",
    "SteppedClock",
    "SystemClock",
]

EQUIPMENT = 0  # SteppedClock phase of the devices: equipment steps, agents' telemetry
PEOPLE = 1  # SteppedClock phase of the behaviours (simulators/behaviours)


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


class StepTimeout(Exception):
    """A task woken by a :class:`SteppedClock` neither slept again nor ended in time; the message
    names it (it waits on something other than the clock that never comes)."""


@dataclass(order=True, slots=True)
class _Sleeper:
    target: datetime
    name: str  # the task's name: the order of sleepers due at the same time does not depend on
    seq: int  # which of them happened to go to sleep first (seq only breaks ties of equal names)
    future: asyncio.Future[None] = field(compare=False)
    task: asyncio.Task[object] | None = field(compare=False)


class SteppedClock:
    """Simulated time that moves only when told: :meth:`advance_to` (normally to
    :meth:`next_due`), then :meth:`wake_due` per phase. ``sleep(s)`` waits until the runner has
    advanced ``s`` simulated seconds past now, however long that takes in real time.

    Sleepers are kept per *phase* (:data:`EQUIPMENT`, :data:`PEOPLE`) so a runner can let the
    equipment step, wait for its messages to reach the server, and only then let people act.
    """

    def __init__(self, epoch: datetime, *, settle_limit: float = 60.0) -> None:
        if epoch.tzinfo is None:
            raise ValueError("epoch must be timezone-aware")
        self.epoch = epoch.astimezone(UTC)
        self._now = self.epoch
        self._heaps: dict[int, list[_Sleeper]] = {EQUIPMENT: [], PEOPLE: []}
        self._asleep: dict[asyncio.Task[object], _Sleeper] = {}
        self._seq = 0
        self._changed: asyncio.Event | None = None
        self.settle_limit = settle_limit  # real seconds a woken task may take before it sleeps again

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float, *, phase: int = EQUIPMENT) -> None:
        """Until the clock is advanced ``seconds`` past now and this sleeper's turn comes;
        ``seconds <= 0`` returns at once (time does not move by itself)."""
        if seconds <= 0:
            return
        if phase not in self._heaps:
            raise ValueError(f"unknown phase {phase!r}: use EQUIPMENT or PEOPLE")
        task = asyncio.current_task()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        sleeper = _Sleeper(
            self._now + timedelta(seconds=seconds),
            task.get_name() if task is not None else "",
            self._seq,
            future,
            task,
        )
        heapq.heappush(self._heaps[phase], sleeper)
        if task is not None:
            self._asleep[task] = sleeper
        self._signal()
        try:
            await future
        finally:
            if task is not None and self._asleep.get(task) is sleeper:
                del self._asleep[task]
            if not future.done():
                future.cancel()  # cancelled while asleep: the heap entry is skipped when due

    def _signal(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def sleepers(self, phase: int | None = None) -> int:
        """How many tasks sleep on this clock (in ``phase``, or in any)."""
        heaps = self._heaps.values() if phase is None else [self._heaps[phase]]
        return sum(1 for heap in heaps for s in heap if not s.future.done())

    def next_due(self) -> datetime | None:
        """The earliest wake-up time of any sleeper (None: nobody sleeps on this clock)."""
        heads: list[datetime] = []
        for heap in self._heaps.values():
            while heap and heap[0].future.done():
                heapq.heappop(heap)  # cancelled sleepers
            if heap:
                heads.append(heap[0].target)
        return min(heads, default=None)

    def advance_to(self, when: datetime) -> None:
        """Set the time to ``when`` (never backwards); nobody is woken yet (:meth:`wake_due`)."""
        if when < self._now:
            raise ValueError(
                f"a stepped clock cannot go back from {self._now.isoformat()} to {when.isoformat()}"
            )
        self._now = when

    def is_asleep(self, task: asyncio.Task[object]) -> bool:
        sleeper = self._asleep.get(task)
        return sleeper is not None and not sleeper.future.done()

    async def wake_due(self, phase: int, *, one_at_a_time: bool = True) -> int:
        """Wake the sleepers of ``phase`` due by now, earliest first, ties by task name; each
        runs until it sleeps again or ends before the next is woken (``one_at_a_time``), or all
        are woken together and then waited for (for tasks that, once woken, run without waiting
        on anything — equipment steps). Returns how many were woken; raises
        :class:`StepTimeout` if one does not settle within ``settle_limit`` real seconds."""
        heap = self._heaps[phase]
        woken: list[asyncio.Task[object]] = []
        count = 0
        while heap and heap[0].target <= self._now:
            sleeper = heapq.heappop(heap)
            if sleeper.future.done():
                continue
            sleeper.future.set_result(None)
            count += 1
            if sleeper.task is None:
                continue
            if one_at_a_time:
                await self.settle([sleeper.task])
            else:
                woken.append(sleeper.task)
        if woken:
            await self.settle(woken)
        return count

    async def settle(self, tasks: Iterable[asyncio.Task[object]]) -> None:
        """Until every one of ``tasks`` sleeps on this clock or has ended."""
        pending = list(tasks)
        await asyncio.sleep(0)  # a woken task runs its step before this one resumes (FIFO)
        pending = [t for t in pending if not t.done() and not self.is_asleep(t)]
        if not pending:
            return
        if self._changed is None:
            self._changed = asyncio.Event()
        deadline = asyncio.get_running_loop().time() + self.settle_limit
        while pending:
            self._changed.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                names = ", ".join(t.get_name() for t in pending[:5])
                raise StepTimeout(
                    f"at simulated {self._now.isoformat()}: {len(pending)} task(s) neither slept on "
                    f"the stepped clock nor ended within {self.settle_limit:g} s ({names}); a task of a stepped "
                    "run may wait only on the clock or on work that finishes in real time"
                )
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait([changed, *pending], timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
            pending = [t for t in pending if not t.done() and not self.is_asleep(t)]
