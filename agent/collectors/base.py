"""Collectors *read*; the runtime maps their readings to Telemetry and decides when to send.

A collector is anything with ``collect(now) -> Mapping[str, float]``: the psutil system
collector, an equipment plugin (through :class:`PluginCollector`), or a simulator's model.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from agent.plugin import EquipmentPlugin

__all__ = ["Collector", "PluginCollector", "clean_metrics"]

logger = logging.getLogger(__name__)

_METRIC_NAME = re.compile(r"[a-z0-9_]+(\.[a-z0-9_-]+)*")  # protocol.messages.MetricName


class Collector(Protocol):
    name: str

    def collect(self, now: datetime) -> Mapping[str, float]:
        """Current readings, metric name → value. Cheap and non-blocking, or say so in the name."""
        ...


class PluginCollector:
    """Adapts :meth:`EquipmentPlugin.read_metrics` to :class:`Collector`."""

    def __init__(self, plugin: EquipmentPlugin) -> None:
        self.plugin = plugin
        self.name = f"plugin[{plugin.name}]"

    def collect(self, now: datetime) -> Mapping[str, float]:
        return self.plugin.read_metrics(now)


_reported: set[tuple[str, str]] = set()


def clean_metrics(source: str, readings: Mapping[str, float]) -> dict[str, float]:
    """Keep what the protocol accepts: valid names, finite numbers. Each offender is logged once,
    so one bad metric never costs the whole telemetry batch."""
    out: dict[str, float] = {}
    for name, value in readings.items():
        problem = None
        if not isinstance(name, str) or len(name) > 128 or not _METRIC_NAME.fullmatch(name):
            problem = "invalid metric name (lower-case dotted words)"
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            problem = f"value {value!r} is not a finite number"
        if problem is None:
            out[name] = float(value)
        elif (source, str(name)) not in _reported:
            _reported.add((source, str(name)))
            logger.warning("%s: dropping metric %r: %s", source, name, problem)
    return out
