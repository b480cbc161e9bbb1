"""Collectors: things that read metrics (system via psutil, equipment via plugins)."""

from agent.collectors.base import Collector, PluginCollector, clean_metrics
from agent.collectors.system import SystemCollector, system_info

__all__ = ["Collector", "PluginCollector", "SystemCollector", "clean_metrics", "system_info"]
