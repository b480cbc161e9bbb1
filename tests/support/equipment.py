"""A small equipment plugin for tests: metrics it is given, events on demand, actions that
record every call — the proof that a rejected command never ran.

    plugin = FakePlugin("e2e", actions=["record", "forbidden"])   # e2e.record, e2e.forbidden
    async with AgentRuntime(settings, plugins=[plugin]) as agent:
        await plugin.running.wait()
        plugin.emit("fault.raised", code="E42", severity=Severity.ERROR)   # queued in the outbox
        ...
    assert plugin.calls_of(command_id) == []                            # never executed

Implements :class:`agent.plugin.EquipmentPlugin`; pass instances to ``AgentRuntime(plugins=…)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.plugin import ActionContext, ActionHandler, ActionResult, ActionSpec, EventSink
from protocol import EquipmentInfo, Severity

__all__ = ["ActionCall", "FakePlugin", "fake_factory"]


@dataclass(frozen=True, slots=True)
class ActionCall:
    action: str
    command_id: str
    args: dict[str, Any]


class FakePlugin:
    """Test equipment named ``name`` offering ``<name>.<action>`` for each of ``actions``
    (``disruptive`` ones flagged so), each recording its call in :attr:`calls`."""

    def __init__(
        self,
        name: str = "fake",
        metrics: Mapping[str, float] | None = None,
        *,
        actions: Iterable[str] = ("touch",),
        disruptive: Iterable[str] = (),
        model: str = "T-1",
        serial: str = "SN-1",
    ) -> None:
        self.name = name
        self.metrics = dict(metrics if metrics is not None else {"fake.temperature.celsius": 21.5})
        self.calls: list[ActionCall] = []
        self.called = asyncio.Event()
        self.sink: EventSink | None = None
        self.running = asyncio.Event()
        self.extra_actions: list[ActionSpec] = []
        self.model = model
        self.serial = serial
        self._actions = tuple(actions)
        self._disruptive = frozenset(disruptive)

    # -- EquipmentPlugin ---------------------------------------------------------------------

    def equipment_info(self) -> EquipmentInfo:
        return EquipmentInfo(
            kind="test-rig", vendor="Acme", model=self.model, serial=self.serial, firmware="1.0"
        )

    def read_metrics(self, now: datetime) -> Mapping[str, float]:
        return self.metrics

    def actions(self) -> Sequence[ActionSpec]:
        specs = [
            ActionSpec(
                f"{self.name}.{short}",
                self._recorder(f"{self.name}.{short}"),
                f"Record a call of {short}.",
                disruptive=short in self._disruptive,
            )
            for short in self._actions
        ]
        return [*specs, *self.extra_actions]

    async def run(self, sink: EventSink) -> None:
        self.sink = sink
        self.running.set()

    # -- for the test ------------------------------------------------------------------------

    def _recorder(self, action: str) -> ActionHandler:
        async def handle(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
            self.calls.append(ActionCall(action, ctx.command_id, dict(args)))
            self.called.set()
            return ActionResult(ok=True, output=f"{action} done", data={"count": len(self.calls)})

        return handle

    def calls_of(self, command_id: str) -> list[ActionCall]:
        return [call for call in self.calls if call.command_id == command_id]

    def emit(
        self,
        event: str,
        *,
        code: str | None = None,
        severity: Severity = Severity.INFO,
        detail: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Report an event through the agent (queued in its disk outbox at once)."""
        if self.sink is None:
            raise RuntimeError(f"plugin {self.name!r} is not running: await plugin.running.wait() first")
        self.sink.emit_event(event, code=code, severity=severity, detail=detail, data=data)


def fake_factory(device_id: str, options: Mapping[str, Any]) -> FakePlugin:
    """A :class:`agent.plugin.PluginFactory`, as an entry point would name it."""
    if options.get("explode"):
        raise ValueError("no equipment at the configured address")
    return FakePlugin(str(options.get("name", "fake")), options.get("metrics"))
