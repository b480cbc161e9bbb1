"""System metrics and the host's identity, via psutil.

Metrics: ``system.cpu.percent``, ``system.memory.percent``, ``system.memory.used_bytes``,
``system.disk.percent`` (root file system), ``system.load.1m/5m/15m``,
``system.net.bytes_sent``/``bytes_recv`` (counters since boot), ``system.uptime.seconds`` and
``system.temperature.<sensor>[.<label>]`` where the platform exposes sensors.

psutil reads /proc and sysfs: fast, but blocking; the runtime calls :meth:`collect` from a
worker thread.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import psutil

from protocol import SystemInfo

__all__ = ["SystemCollector", "system_info"]

_ROOT = os.path.abspath(os.sep)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "_", text.strip().lower()).strip("_") or "sensor"


class SystemCollector:
    name = "system"

    def __init__(self, disk_path: str = _ROOT) -> None:
        self.disk_path = disk_path
        psutil.cpu_percent(interval=None)  # prime: the first reading is always 0.0

    def collect(self, now: datetime) -> Mapping[str, float]:
        memory = psutil.virtual_memory()
        metrics: dict[str, float] = {
            "system.cpu.percent": psutil.cpu_percent(interval=None),
            "system.memory.percent": memory.percent,
            "system.memory.used_bytes": float(memory.used),
            "system.uptime.seconds": max(0.0, time.time() - psutil.boot_time()),
        }
        with contextlib.suppress(OSError):
            metrics["system.disk.percent"] = psutil.disk_usage(self.disk_path).percent
        try:
            one, five, fifteen = psutil.getloadavg()
        except (OSError, AttributeError):
            pass
        else:
            metrics.update({"system.load.1m": one, "system.load.5m": five, "system.load.15m": fifteen})
        net = psutil.net_io_counters()
        if net is not None:
            metrics["system.net.bytes_sent"] = float(net.bytes_sent)
            metrics["system.net.bytes_recv"] = float(net.bytes_recv)
        metrics.update(_temperatures())
        return metrics


def _temperatures() -> dict[str, float]:
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return {}
    try:
        sensors = reader()
    except (OSError, RuntimeError):
        return {}
    out: dict[str, float] = {}
    for chip, entries in sensors.items():
        for index, entry in enumerate(entries):
            label = _slug(entry.label) if entry.label else (str(index) if len(entries) > 1 else "")
            name = f"system.temperature.{_slug(chip)}" + (f".{label}" if label else "")
            out.setdefault(name, float(entry.current))
    return out


@functools.cache
def system_info() -> SystemInfo:
    """The host's identity for the inventory. Cached: it does not change while we run."""
    try:
        disk_total: int | None = psutil.disk_usage(_ROOT).total
    except OSError:
        disk_total = None
    return SystemInfo(
        hostname=platform.node()[:256],
        os=platform.system(),
        os_version=platform.release()[:256],
        arch=platform.machine(),
        cpu_count=psutil.cpu_count(),
        memory_total=psutil.virtual_memory().total,
        disk_total=disk_total,
        python=sys.version.split()[0],
        boot_time=datetime.fromtimestamp(psutil.boot_time(), UTC),
    )
