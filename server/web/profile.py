"""The device's inventory as the system profile support reads first (issue 15, item 3):
hardware, firmware, software, configuration and network, each a list of (label, text) — not
the agent's JSON. The agent's inventory (agent/inventory.py) names its parts ``equipment``,
``system``, ``agent``, ``site`` and ``config``; anything else a device reports (an older or
another agent) is kept under *Other*, flattened, so nothing it said is hidden. The raw JSON
stays one click away on the page."""

from __future__ import annotations

import json
from typing import Any

from server.web import console

__all__ = ["SECTIONS", "diagnostics", "profile"]

SECTIONS = ("Hardware", "Firmware", "Software", "Configuration", "Network", "Other")

_PLACES: dict[tuple[str, str], tuple[str, str]] = {
    ("equipment", "kind"): ("Hardware", "Kind"),
    ("equipment", "vendor"): ("Hardware", "Vendor"),
    ("equipment", "model"): ("Hardware", "Model"),
    ("equipment", "serial"): ("Hardware", "Serial"),
    ("hardware", "model"): ("Hardware", "Model"),
    ("hardware", "serial"): ("Hardware", "Serial"),
    ("system", "arch"): ("Hardware", "Architecture"),
    ("system", "cpu_count"): ("Hardware", "CPUs"),
    ("system", "memory_total"): ("Hardware", "Memory"),
    ("system", "disk_total"): ("Hardware", "Disk"),
    ("equipment", "firmware"): ("Firmware", "Equipment firmware"),
    ("hardware", "firmware"): ("Firmware", "Equipment firmware"),
    ("system", "os"): ("Software", "Operating system"),
    ("system", "os_version"): ("Software", "OS version"),
    ("os", "name"): ("Software", "Operating system"),
    ("os", "version"): ("Software", "OS version"),
    ("system", "python"): ("Software", "Python"),
    ("agent", "version"): ("Software", "Agent version"),
    ("agent", "plugins"): ("Software", "Plugins"),
    ("agent", "actions"): ("Software", "Actions offered"),
    ("agent", "attended"): ("Configuration", "Attended site (consent at the machine)"),
    ("config", "telemetry_interval"): ("Configuration", "Telemetry every"),
    ("config", "allowed_actions"): ("Configuration", "Allowed actions"),
    ("config", "consent_actions"): ("Configuration", "Actions needing consent"),
    ("config", "forbidden_actions"): ("Configuration", "Forbidden actions"),
    ("config", "windows"): ("Configuration", "Maintenance windows"),
    ("config", "log_paths"): ("Configuration", "Log files"),
    ("config", "plugins"): ("Configuration", "Plugins loaded"),
    ("config", "outbox_max_messages"): ("Configuration", "Outbox size (messages)"),
    ("system", "hostname"): ("Network", "Host name"),
    ("system", "boot_time"): ("Network", "Booted"),
}
_SIZES = {("system", "memory_total"), ("system", "disk_total")}
_SKIP = {("agent", "catalogue"), ("config", "faults"), ("seq", ""), ("ts", "")}
"""Shown elsewhere: the action catalogue (the diagnostics below), the fault catalogues."""


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return "—" if value is None or value == "" else str(value)


def profile(inventory: dict[str, Any] | None) -> dict[str, list[tuple[str, str]]]:
    """The sections that have something, in :data:`SECTIONS` order."""
    out: dict[str, list[tuple[str, str]]] = {name: [] for name in SECTIONS}
    seen: set[tuple[str, str]] = set()
    for part, body in sorted((inventory or {}).items()):
        if not isinstance(body, dict):
            if (part, "") in _SKIP:
                continue
            where = ("Network", "Site (as the agent names it)") if part == "site" else ("Other", part)
            out[where[0]].append((where[1], _text(body)))
            continue
        for key, value in body.items():
            if (part, key) in _SKIP:
                continue
            section, label = _PLACES.get((part, key), ("Other", f"{part}.{key}"))
            if (section, label) in seen:
                continue  # the same fact under two names (hardware.model and equipment.model)
            seen.add((section, label))
            if (part, key) in _SIZES and isinstance(value, int | float):
                text = console.file_size(int(value))
            elif (part, key) == ("config", "telemetry_interval") and isinstance(value, int | float):
                text = f"{value:g} s"
            else:
                text = _text(value)
            out[section].append((label, text))
    faults = ((inventory or {}).get("config") or {}).get("faults")
    if isinstance(faults, dict | list) and faults:
        out["Configuration"].append(("Fault catalogues", f"{len(faults)} reported"))
    return {name: rows for name, rows in out.items() if rows}


def diagnostics(inventory: dict[str, Any] | None) -> list[dict[str, str]]:
    """The actions the device's own policy allows without consent and that change nothing
    (``disruptive`` false): what a technician may run to look, from the inventory's catalogue."""
    catalogue = ((inventory or {}).get("agent") or {}).get("catalogue") or []
    return [
        {"name": str(a["name"]), "description": str(a.get("description") or "")}
        for a in catalogue
        if isinstance(a, dict) and a.get("name") and a.get("policy") == "allowed" and not a.get("disruptive")
    ]
