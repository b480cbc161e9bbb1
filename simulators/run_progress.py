"""A run's progress, as the CLI prints it while a scenario runs, and its error type."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from simulators.behaviours import World
from simulators.fleet import SimulatedFleet

__all__ = ["Progress", "Reporter", "RunError", "progress"]

logger = logging.getLogger(__name__)


class RunError(Exception):
    """The run could not start or finish; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class Progress:
    day: float
    days: float
    devices: int
    connected: int
    open_incidents: int
    resolved: dict[str, int]

    def line(self) -> str:
        channels = ", ".join(f"{k} {v}" for k, v in sorted(self.resolved.items())) or "none yet"
        return (
            f"day {min(self.day, self.days):5.1f}/{self.days:g}  devices {self.connected}/{self.devices}  "
            f"open incidents {self.open_incidents}  resolved: {channels}"
        )


async def progress(world: World, fleet: SimulatedFleet, start: datetime, days: float) -> Progress:
    open_page = await world.desk.call("GET", "/incidents", open_only="true", limit=1)
    resolved: Counter[str] = Counter()
    offset = 0
    while True:
        page = await world.desk.call("GET", "/incidents", status="resolved", limit=1000, offset=offset)
        resolved.update(i["channel"] or "?" for i in page["items"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            break
    fp = fleet.progress()
    day = (world.clock.now() - start).total_seconds() / 86400.0
    return Progress(day, days, fp.devices, fp.connected, open_page["total"], dict(resolved))


class Reporter:
    """Progress lines at most every ``every`` real seconds (reading the API costs no simulated time)."""

    def __init__(
        self,
        world: World,
        fleet: SimulatedFleet,
        *,
        start: datetime,
        days: float,
        on_progress: Callable[[Progress], None] | None,
        every: float,
    ) -> None:
        self.world, self.fleet, self.start, self.days = world, fleet, start, days
        self.on_progress, self.every = on_progress, every
        self._last = float("-inf")

    async def __call__(self, *, force: bool = False) -> None:
        if self.on_progress is None or (not force and time.monotonic() - self._last < self.every):
            return
        self._last = time.monotonic()
        self.on_progress(await progress(self.world, self.fleet, self.start, self.days))
