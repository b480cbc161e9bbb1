"""The fleet registry's queries: the device list, one device, its telemetry and events."""

from __future__ import annotations

from server.fleet.devices import (
    DeviceFilter,
    get_device,
    list_devices,
    list_events,
    list_telemetry,
)

__all__ = [
    "DeviceFilter",
    "get_device",
    "list_devices",
    "list_events",
    "list_telemetry",
]
