"""The agent's telemetry: every reader's metrics (the machine's, each plugin's, the outbox's own
depth and drops) in one batch every ``telemetry_interval``, on a fixed schedule."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from agent.clock import Clock
from agent.collectors import PluginCollector, SystemCollector, clean_metrics
from agent.uplink import MAX_SAMPLES

__all__ = ["TelemetryLoop"]

logger = logging.getLogger(__name__)


class TelemetryLoop:
    def __init__(
        self,
        name: str,
        clock: Clock,
        interval: float,
        *,
        system: SystemCollector | None,
        collectors: Sequence[PluginCollector],
        outbox_counts: Callable[[], tuple[int, int]],
        send: Callable[[datetime, Mapping[str, float]], object],
    ) -> None:
        self.name = name
        self.clock = clock
        self.interval = interval
        self._system = system
        self._collectors = list(collectors)
        self._outbox_counts = outbox_counts  # (depth, dropped telemetry)
        self._send = send

    async def metrics_now(self) -> dict[str, float]:
        now = self.clock.now()
        metrics: dict[str, float] = {}
        if self._system is not None:
            metrics.update(clean_metrics("system", await asyncio.to_thread(self._system.collect, now)))
        for collector in self._collectors:
            try:
                readings = collector.collect(now)
            except Exception:  # the plugin boundary: one failing reader does not stop telemetry
                logger.warning("%s: %s failed to read metrics", self.name, collector.name, exc_info=True)
                continue
            metrics.update(clean_metrics(collector.name, readings))
        depth, dropped = self._outbox_counts()
        metrics["agent.outbox.depth"] = float(depth)
        metrics["agent.outbox.dropped_telemetry"] = float(dropped)
        return metrics

    async def run(self) -> None:
        """A batch every ``interval`` on a fixed schedule: a late wake-up (a busy event loop,
        thousands of agents in one process) shortens the next wait instead of pushing every
        later batch back. A whole interval late, the schedule restarts from now rather than
        sending a burst to catch up (and so it does if the wall clock is set back)."""
        step = timedelta(seconds=self.interval)
        due = self.clock.now()
        while True:
            started = self.clock.now()
            metrics = await self.metrics_now()
            if len(metrics) > MAX_SAMPLES:
                logger.warning("%s: %d metrics, sending the first %d", self.name, len(metrics), MAX_SAMPLES)
            self._send(started, metrics)
            due += step
            now = self.clock.now()
            # A whole interval late, or the clock was set back: start the schedule again from now.
            if not now < due <= now + step:
                due = now + step
            await self.clock.sleep((due - now).total_seconds())
