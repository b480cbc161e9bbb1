"""Finding and building equipment plugins (entry-point group ``fleetcare.equipment``).

    [project.entry-points."fleetcare.equipment"]
    acme-printer = "acme_fleetcare.printer:AcmePrinterPlugin"   # a PluginFactory

The runtime also accepts ready-made plugin instances (simulators pass thousands of them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from agent.config import PluginSettings
from agent.errors import PluginError, PluginNotFound
from agent.plugin import ENTRY_POINT_GROUP, EquipmentPlugin, PluginFactory

__all__ = ["available_plugins", "build_plugin", "check_plugin", "load_plugins"]

_REQUIRED = ("name", "equipment_info", "read_metrics", "actions", "run")


def available_plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def check_plugin(plugin: object, label: str) -> EquipmentPlugin:
    """``plugin`` if it has the EquipmentPlugin surface, else PluginError naming what is missing."""
    missing = [attr for attr in _REQUIRED if not hasattr(plugin, attr)]
    if missing:
        raise PluginError(label, f"{type(plugin).__name__} lacks {', '.join(missing)} (see agent/plugin.py)")
    name = plugin.name  # type: ignore[attr-defined]
    if not isinstance(name, str) or not name:
        raise PluginError(label, "its `name` must be a non-empty string")
    return plugin  # type: ignore[return-value]


def build_plugin(name: str, device_id: str, options: Mapping[str, Any]) -> EquipmentPlugin:
    found = available_plugins()
    entry = found.get(name)
    if entry is None:
        raise PluginNotFound(name, list(found))
    try:
        factory: PluginFactory = entry.load()
    except Exception as exc:  # an import error of third-party code, whatever its class
        raise PluginError(name, f"cannot import {entry.value}: {exc!r}") from exc
    try:
        plugin = factory(device_id, dict(options))
    except Exception as exc:  # the plugin's own constructor: report it, named
        raise PluginError(name, f"factory {entry.value} failed: {exc!r}") from exc
    return check_plugin(plugin, name)


def load_plugins(specs: Sequence[PluginSettings], device_id: str) -> list[EquipmentPlugin]:
    plugins = [build_plugin(spec.name, device_id, spec.options) for spec in specs]
    names = [p.name for p in plugins]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PluginError(duplicates[0], "configured more than once (plugin names must be unique)")
    return plugins
