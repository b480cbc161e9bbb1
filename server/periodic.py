"""One shape for every periodic job the server runs (sweepers, the audit sealer, rule passes,
the broker access sync): a name, an interval and one round.

Why one shape: five loops written five ways each had their own idea of which errors end them,
none had a timeout, and the stepped simulator had to find and cancel them by task name. A
:class:`Periodic` runs its round every ``interval`` seconds until cancelled; a round that raises
is logged and the next one runs on time; a round that takes longer than ``timeout`` is
cancelled and counted. A *clocked* job's round takes the instant it sweeps for (``now``): the
server runs those in real time unless ``jobs_in_real_time`` is off, and the simulator then
calls :meth:`server.runtime.Runtime.sweep_all` at the instants it chooses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["JobStats", "Periodic"]

logger = logging.getLogger(__name__)

Round = Callable[[datetime | None], Awaitable[object]]


@dataclass(slots=True)
class JobStats:
    rounds: int = 0
    failures: int = 0
    timeouts: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class Periodic:
    """``round(now)`` every ``interval`` s. ``now`` is None in real time (the round reads the
    clock itself), an instant when a stepped run sweeps."""

    name: str
    interval: float
    round: Round
    clocked: bool = False  # the round's outcome depends on the instant it sweeps for
    timeout: float | None = None  # None: ten intervals, at least 30 s
    stats: JobStats = field(default_factory=JobStats)

    @property
    def round_timeout(self) -> float:
        return self.timeout if self.timeout is not None else max(30.0, 10 * self.interval)

    async def run_once(self, now: datetime | None = None) -> bool:
        """One round, bounded by the timeout; False (logged, counted) if it failed."""
        self.stats.rounds += 1
        try:
            async with asyncio.timeout(self.round_timeout):
                await self.round(now)
        except TimeoutError:
            self.stats.timeouts += 1
            self.stats.last_error = f"timed out after {self.round_timeout:g} s"
            logger.warning(
                "%s: round timed out after %.1fs; next in %.1fs", self.name, self.round_timeout, self.interval
            )
            return False
        except Exception as exc:  # a database hiccup, a bug in one round: never the end of the job
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            logger.exception("%s: round failed; next in %.1fs", self.name, self.interval)
            return False
        return True

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval)
