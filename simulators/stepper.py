"""The discrete-event loop of a stepped run (see simulators/run.py): from one wake-up instant to
the next, each instant's messages stored before the server sweeps and the people act."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy import and_, func, or_, select

from server.db.models import Message, StateTracker
from server.incidents import IncidentTracker
from server.settings import ServerSettings
from simulators.behaviours import World
from simulators.behaviours.customer import Customers
from simulators.behaviours.technician import ServiceDesk
from simulators.clock import EQUIPMENT, PEOPLE, SteppedClock, StepTimeout
from simulators.fleet import SimulatedFleet
from simulators.run_progress import Reporter, RunError

__all__ = ["BARRIER_TIMEOUT", "HOUSEKEEPING_S", "SWITCH_INTERVAL", "Stepper", "earliest"]

logger = logging.getLogger(__name__)

BARRIER_TIMEOUT = 60.0  # real seconds for a step's messages to reach the server
SWITCH_INTERVAL = 0.0005  # s: sys.setswitchinterval during a stepped run
HOUSEKEEPING_S = 3600.0  # simulated s between session/command sweeps (their windows are hours long)


def earliest(*times: datetime | None) -> datetime | None:
    return min((t for t in times if t is not None), default=None)


class Stepper:
    """The discrete-event loop of a stepped run (see the module's docstring)."""

    def __init__(
        self,
        clock: SteppedClock,
        app: FastAPI,
        settings: ServerSettings,
        *,
        fleet: SimulatedFleet,
        world: World,
        customers: Customers,
        service_desk: ServiceDesk,
    ) -> None:
        self.clock, self.fleet, self.world = clock, fleet, world
        self.customers, self.service_desk = customers, service_desk
        self.runtime = app.state.runtime
        if self.runtime.incidents is None:
            raise RunError("a simulated run needs incidents enabled (incidents.enabled = true)")
        self.tracker: IncidentTracker = self.runtime.incidents
        self._seen = {d: agent.outbox.next_seq() for d, agent in fleet.agents.items()}
        self._spawned: list[tuple[Coroutine[Any, Any, None], str]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # the people's tasks still running
        self.instants = 0
        self._tracker_due: float | None = None  # the earliest debounce/grace window (Unix s)
        self._grid = -1
        world.settle = self.settle

    async def barrier(self) -> bool:
        """Until every message the agents queued so far is stored by the server: each agent's
        outbox drained (the broker has it) and its newest seq in ``messages`` (the newest message
        of an outbox is never superseded). True if any of them was more than telemetry (people
        may have something new to see)."""
        expected: dict[str, int] = {}
        for device_id, agent in self.fleet.agents.items():
            next_seq = agent.outbox.next_seq()
            if next_seq != self._seen[device_id]:
                expected[device_id] = next_seq - 1
        if not expected:
            return False
        new = or_(*(and_(Message.device_id == d, Message.seq >= self._seen[d]) for d in expected))
        notable = False
        try:
            async with asyncio.timeout(BARRIER_TIMEOUT):
                for device_id in expected:
                    await self.fleet.agents[device_id].drained()
                stats = self.runtime.stats
                while True:
                    batches = stats.batches
                    async with self.runtime.sessions() as session:
                        query = select(Message.device_id, Message.seq, Message.kind).where(new)
                        rows = (await session.execute(query)).all()
                    stored: dict[str, int] = {}
                    for device_id, seq, kind in rows:
                        stored[device_id] = max(seq, stored.get(device_id, -1))
                        notable = notable or kind != "telemetry"
                    if all(stored.get(d, -1) >= seq for d, seq in expected.items()):
                        break
                    # nothing new stored yet: no need to ask the database again (the ingest
                    # counters have no event to wait on; this polls a number in memory)
                    while stats.batches == batches:  # noqa: ASYNC110
                        await asyncio.sleep(0.0005)
        except TimeoutError:
            late = sorted(d for d in expected if self.fleet.agents[d].outbox_depth() > 0)
            raise RunError(
                f"at simulated {self.clock.now().isoformat()}: the messages of {len(expected)} device(s) "
                f"did not reach the server within {BARRIER_TIMEOUT:g} s (still queued on: "
                f"{', '.join(late[:5]) or 'none; the server did not store them'}); a device that "
                "reconnected during a stepped run, or a stopped ingest, makes the run unreproducible"
            ) from None
        for device_id, seq in expected.items():
            self._seen[device_id] = seq + 1
        return notable

    async def sweep(self, *, force: bool = False, notable: bool = False) -> bool:
        """The server's sweeps at this instant, when they can have anything to do. Ingest already
        derives the incidents of what arrives (and their evidence); the incident sweep is for
        what falls due without a message — debounce and grace windows (:meth:`next_window`),
        commands finishing (``force``: a person waits for the evidence) — and runs hourly
        anyway, as do the session and command sweeps (their time limits are hours long).
        ``notable``: state-bearing messages arrived, so a window may have opened. True if the
        incident sweep advanced a device."""
        now = self.clock.now()
        at = now.timestamp()
        grid = int(at // HOUSEKEEPING_S)
        hourly = grid != self._grid
        if notable and not force:
            await self._read_windows()
        advanced: object = 0
        if hourly:
            self._grid = grid
            # incidents (with their KPI rollups), then remote sessions, then commands
            advanced = (await self.runtime.sweep_all(now)).get("server.incidents.sweeper", 0)
            await self._read_windows()
        elif force or (self._tracker_due is not None and self._tracker_due <= at):
            advanced = await self.tracker.sweep(self.runtime.sessions, now)
            await self._read_windows()
        return bool(advanced)

    async def _read_windows(self) -> None:
        """The earliest debounce/grace window of any device (now, if one is marked for a rebuild)."""
        async with self.runtime.sessions() as session:
            due, dirty = (
                await session.execute(select(func.min(StateTracker.due_s), func.max(StateTracker.dirty)))
            ).one()
        self._tracker_due = self.clock.now().timestamp() if dirty else due

    def next_window(self) -> datetime | None:
        """When the next debounce/grace window ends, if after now: an instant of its own, so an
        incident opens exactly when its fault has lasted the debounce."""
        if self._tracker_due is None or self._tracker_due <= self.clock.now().timestamp():
            return None
        return datetime.fromtimestamp(self._tracker_due, UTC)

    async def settle(self) -> None:
        """For a behaviour mid-step: the devices' messages so far are stored and the incidents
        swept (the evidence of a command decides a channel in the sweep)."""
        await self.barrier()
        await self.sweep(force=True)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._spawned.append((coro, name))

    async def _people(self, tg: asyncio.TaskGroup, dirty: bool) -> None:
        """Hand the open incidents to the behaviours (when something may have changed: new
        messages, a sweep, a claim) and wake the people due, one task at a time, until nobody is
        left to act at this instant."""
        while True:
            if dirty:
                incidents = await self.world.open_incidents()
                self.customers.take(incidents, self._spawn)
                self.service_desk.take(incidents, self._spawn)
                while self._spawned:
                    coro, name = self._spawned.pop(0)
                    task = tg.create_task(coro, name=name)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    await self.clock.settle([task])
            claims = self.world.claims.version
            if not await self.clock.wake_due(PEOPLE):
                return
            new = await self.barrier()
            swept = await self.sweep(notable=new)
            dirty = new or swept or self.world.claims.version != claims

    async def run(self, end: datetime, report: Reporter) -> None:
        """From now to ``end``, instant by instant; then the people's pending tasks are cancelled."""
        # Every instant waits on the database thread (aiosqlite) a few times; with the default
        # 5 ms GIL switch interval each wait can cost that much while this thread is busy.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            await self._run(end, report)
        finally:
            sys.setswitchinterval(switch)

    async def _run(self, end: datetime, report: Reporter) -> None:
        await self.barrier()  # what the devices sent while people were set up
        await self.sweep(force=True)
        failure: RunError | None = None  # raised as itself, not inside the task group's ExceptionGroup
        async with asyncio.TaskGroup() as tg:
            try:
                while (due := earliest(self.clock.next_due(), self.next_window())) is not None and due < end:
                    self.clock.advance_to(due)
                    self.instants += 1
                    # equipment steps run without waiting on anything: woken all at once, in order
                    await self.clock.wake_due(EQUIPMENT, one_at_a_time=False)
                    new = await self.barrier()
                    swept = await self.sweep(notable=new)
                    await self._people(tg, dirty=new or swept)
                    await report()
                self.clock.advance_to(end)
                await self.barrier()
                await self.sweep(force=True)
            except StepTimeout as exc:
                failure = RunError(f"stepped run stuck: {exc}")
                failure.__cause__ = exc
            except RunError as exc:
                failure = exc
            finally:
                for task in list(self._tasks):
                    task.cancel()
        if failure is not None:
            raise failure
