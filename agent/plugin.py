"""The seam between the agent and a piece of equipment.

A plugin *reads* the equipment (metrics, identity), *reports* what happens to it (events and
operational state through an :class:`EventSink`) and *offers actions* a technician may run.
Real equipment drivers and the simulators implement the same protocol, so simulated fleets run
the real agent runtime.

Plugins are found through the ``fleetcare.equipment`` entry-point group; each entry point names a
:class:`PluginFactory`: ``factory(device_id, options) -> EquipmentPlugin``.

A plugin may also run a self-test (``async selftest(ctx) -> ActionResult``, optional): the
built-in ``selftest`` action runs every plugin's and merges the findings. And it may provide its
own service manager (``service_manager() -> agent.actions.services.ServiceManager``, optional)
for ``service.status`` / ``service.restart`` instead of systemd.

A plugin may also describe the faults it can raise (``fault_catalogue() -> Sequence[FaultSpec]``,
optional): the agent sends the catalogue in the inventory (``config["faults"]``) and the server
uses each fault's ``effect`` when a ``fault.raised`` does not say (docs/incidents.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from protocol import EquipmentInfo, EquipmentState, Severity

__all__ = [
    "ENTRY_POINT_GROUP",
    "FAULT_EFFECTS",
    "ActionContext",
    "ActionHandler",
    "ActionResult",
    "ActionSpec",
    "EquipmentPlugin",
    "EventSink",
    "FaultSpec",
    "PluginFactory",
    "fault_catalogue",
]

ENTRY_POINT_GROUP = "fleetcare.equipment"


@dataclass(frozen=True, slots=True)
class ActionResult:
    ok: bool
    output: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class ActionContext(Protocol):
    """What an action handler may use while it runs."""

    @property
    def device_id(self) -> str: ...

    @property
    def command_id(self) -> str: ...

    @property
    def issuer(self) -> str:
        """Who signed the command (the technician)."""
        ...

    @property
    def session_id(self) -> str | None:
        """The remote session the command belongs to, if any."""
        ...

    def now(self) -> datetime: ...

    async def progress(self, fraction: float, message: str = "") -> None:
        """Report progress (0..1); sent to the technician as a ``progress`` reply."""
        ...

    async def output(self, text: str) -> None:
        """Stream ``text`` to the technician *now* as numbered ``output`` replies (8192
        characters each). Waits while the outbox is too full (back-pressure), so a handler
        streaming megabytes goes at the pace of the broker."""
        ...


ActionHandler = Callable[[Mapping[str, Any], ActionContext], Awaitable[ActionResult]]


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """An action a command may name. ``args_schema`` is a JSON Schema for ``args`` (informative
    until argument validation lands); ``timeout`` bounds the handler's run time in seconds."""

    name: str
    handler: ActionHandler
    description: str = ""
    disruptive: bool = False
    timeout: float = 30.0
    args_schema: Mapping[str, Any] = field(default_factory=dict)


class EventSink(Protocol):
    """Where a plugin reports what happens to its equipment. Calls never block: the agent
    queues the message in its disk outbox and publishes it when the broker is reachable."""

    def emit_event(
        self,
        event: str,
        *,
        code: str | None = None,
        severity: Severity = Severity.INFO,
        detail: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> None: ...

    def set_state(self, state: EquipmentState, reason: str = "") -> None:
        """Report the equipment's operational state; the agent publishes it on change."""
        ...


class EquipmentPlugin(Protocol):
    name: str

    def equipment_info(self) -> EquipmentInfo:
        """Identity for the inventory: kind, vendor, model, serial, firmware."""
        ...

    def read_metrics(self, now: datetime) -> Mapping[str, float]:
        """Current equipment telemetry, e.g. ``{"printer.toner.black.percent": 42.0}``."""
        ...

    def actions(self) -> Sequence[ActionSpec]:
        """Equipment-specific actions (e.g. ``printer.clear_jam``)."""
        ...

    async def run(self, sink: EventSink) -> None:
        """Drive the equipment's own life (faults, state changes) until cancelled. A plugin with
        nothing to drive returns at once."""
        ...


PluginFactory = Callable[[str, Mapping[str, Any]], EquipmentPlugin]

FAULT_EFFECTS = ("down", "degraded", "none")


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A fault the equipment can raise: its ``code`` (as in ``fault.raised``), what it
    ``meaning`` is for a support engineer, its usual ``severity``, and its ``effect`` on the
    equipment: ``down`` (cannot serve), ``degraded`` (serves, worse) or ``none``.

    A ``fault.raised`` may still say otherwise with ``data={"effect": ...}``.
    """

    code: str
    meaning: str = ""
    severity: Severity = Severity.ERROR
    effect: str = "down"

    def __post_init__(self) -> None:
        if not self.code or len(self.code) > 256:
            raise ValueError(f"fault code {self.code!r} must be 1-256 characters")
        if self.effect not in FAULT_EFFECTS:
            raise ValueError(
                f"fault {self.code}: effect {self.effect!r} is not one of {', '.join(FAULT_EFFECTS)}"
            )
        object.__setattr__(self, "severity", Severity(self.severity))

    def to_json(self) -> dict[str, str]:
        return {
            "code": self.code,
            "meaning": self.meaning,
            "severity": self.severity.value,
            "effect": self.effect,
        }


def fault_catalogue(plugin: object) -> list[FaultSpec]:
    """The plugin's ``fault_catalogue()``; a plugin without one has an empty catalogue.

    Raises ValueError (or whatever the plugin raises) when the catalogue is not a sequence of
    :class:`FaultSpec` or repeats a code.
    """
    method = getattr(plugin, "fault_catalogue", None)
    if method is None:
        return []
    specs = list(method())
    for spec in specs:
        if not isinstance(spec, FaultSpec):
            raise ValueError(f"fault_catalogue() returned {type(spec).__name__}, not FaultSpec")
    codes = [spec.code for spec in specs]
    repeated = sorted({code for code in codes if codes.count(code) > 1})
    if repeated:
        raise ValueError(f"fault_catalogue() repeats {', '.join(repeated)}")
    return specs
