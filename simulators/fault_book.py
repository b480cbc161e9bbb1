"""One simulated machine's live faults and wear.

:class:`FaultBook` holds one machine's active faults and wear. Each step it lets random faults
strike (a Poisson process per :class:`~simulators.faults.FaultModel`, in operating hours or in
usage units), raises wear-out faults when a part's usage reaches its drawn life, counts down the
self-clearing ones, and reports ``fault.raised`` / ``fault.cleared`` and the resulting state
through the agent's :class:`~agent.plugin.EventSink`. Fix attempts (remote, guided, field) draw
from a random stream of their own, so trying a fix never changes when the next fault arrives:
the same seed gives the same fault arrivals whatever the technicians do.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from agent.clock import Clock
from agent.plugin import EventSink
from protocol import EquipmentState, Severity, format_ts
from simulators.faults import HOUR, FaultModel, occurs_units

__all__ = ["DRAW", "ActiveFault", "FaultBook", "stable_seed"]


def stable_seed(device_id: str) -> int:
    """A seed derived from the device id (the same device lives the same life)."""
    return int.from_bytes(hashlib.sha256(device_id.encode()).digest()[:8], "big")


class _Draw(Enum):
    DRAW = "draw"


DRAW: Literal[_Draw.DRAW] = _Draw.DRAW
"""``raise_fault(clears_in=DRAW)``: whether and when the fault clears by itself is drawn from the
catalogue (the default); a number or None is the caller's own draw."""


@dataclass(slots=True)
class ActiveFault:
    model: FaultModel
    since: datetime
    clears_in: float | None  # seconds until it clears by itself; None: it will not
    data: dict[str, Any] = field(default_factory=dict)


class FaultBook:
    """The live faults and wear of one simulated machine (see the module docstring)."""

    __slots__ = (
        "_fault_stream",
        "_fix_stream",
        "_reported",
        "_seed",
        "active",
        "clock",
        "lives",
        "models",
        "multipliers",
        "raised",
        "sink",
        "usage",
    )

    def __init__(
        self,
        models: Sequence[FaultModel],
        *,
        seed: int,
        clock: Clock,
        multipliers: Mapping[str, float] | None = None,
    ) -> None:
        self.models = {model.code: model for model in models}
        self.clock = clock
        self.multipliers = dict(multipliers or {})
        self._seed = seed
        self._fault_stream: random.Random | None = None
        self._fix_stream: random.Random | None = None
        self.active: dict[str, ActiveFault] = {}
        self.raised: Counter[str] = Counter()
        self.usage: dict[str, float] = {}  # wear counter per part, since its last replacement
        self.lives: dict[str, float] = {}  # drawn life per wear-out fault code
        for model in self.models.values():
            if model.wear is not None:
                self.usage.setdefault(model.wear.part, 0.0)
                self.lives[model.code] = model.wear.draw_life(self._rng)
        self.sink: EventSink | None = None
        self._reported: EquipmentState | None = None

    # Each stream is made when first drawn from (a machine that never draws, the printer, holds
    # none): the same seed gives the same draws whenever it is made.
    @property
    def _rng(self) -> random.Random:
        if self._fault_stream is None:
            self._fault_stream = random.Random(f"{self._seed}:faults")  # noqa: S311 - a simulation
        return self._fault_stream

    @property
    def _fix_rng(self) -> random.Random:
        if self._fix_stream is None:
            self._fix_stream = random.Random(f"{self._seed}:fixes")  # noqa: S311
        return self._fix_stream

    # -- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> EquipmentState:
        effects = {fault.model.effect for fault in self.active.values()}
        if EquipmentState.DOWN in effects:
            return EquipmentState.DOWN
        return EquipmentState.DEGRADED if effects else EquipmentState.RUNNING

    def report_state(self, reason: str = "", *, force: bool = False) -> None:
        """Tell the sink the state (on change only, plus the first time; always when ``force``)."""
        state = self.state
        if self.sink is None or (state is self._reported and not force):
            return
        self._reported = state
        if not reason:
            reason = ", ".join(sorted(self.active)) or "no active fault"
        self.sink.set_state(state, reason)

    def wear_fraction(self, code: str) -> float:
        """Usage of the part behind wear-out fault ``code`` as a share of its drawn life: it
        fails at 1.0. What the precursor metrics follow."""
        model = self.models[code]
        assert model.wear is not None
        return self.usage[model.wear.part] * self.multipliers.get(code, 1.0) / self.lives[code]

    # -- the life of the machine ----------------------------------------------------------------

    def add_usage(self, part: str, amount: float) -> None:
        self.usage[part] = self.usage.get(part, 0.0) + amount

    def replace(self, part: str) -> None:
        """A new (or serviced) ``part``: its usage restarts at 0 with a newly drawn life."""
        self.usage[part] = 0.0
        for model in self.models.values():
            if model.wear is not None and model.wear.part == part:
                self.lives[model.code] = model.wear.draw_life(self._rng)

    def step(self, seconds: float, *, usage: Mapping[str, float], operating: bool) -> list[str]:
        """Let ``seconds`` pass with ``usage`` (units per usage kind, e.g. ``{"exposure": 3}``)
        counted meanwhile; ``operating`` says whether operating hours accrue. Returns the codes
        raised."""
        for code in self.count_down(seconds):
            fault = self.active[code]
            self.clear(code, cleared_by="self", detail=f"{fault.model.meaning}: cleared by itself")
        raised = []
        for code, model in self.models.items():
            if code in self.active:
                continue
            multiplier = self.multipliers.get(code, 1.0)
            if model.wear is not None:
                if self.wear_fraction(code) >= 1.0:
                    raised.append(code)
            elif model.mtbf is not None:
                units = (
                    (seconds / 3600.0 if operating else 0.0)
                    if model.per == HOUR
                    else usage.get(model.per, 0.0)
                )
                if occurs_units(self._rng, units * multiplier, model.mtbf):
                    raised.append(code)
        for code in raised:
            self.raise_fault(code)
        return raised

    def count_down(self, seconds: float) -> list[str]:
        """Let ``seconds`` pass on the self-clearing faults' timers; returns the codes whose time
        is up, still active: the caller clears them, saying by whom."""
        due = []
        for code, fault in self.active.items():
            if fault.clears_in is not None:
                fault.clears_in -= seconds
                if fault.clears_in <= 0:
                    due.append(code)
        return due

    def raise_fault(
        self, code: str, detail: str = "", *, clears_in: float | _Draw | None = DRAW, **data: Any
    ) -> bool:
        """Raise ``code`` now (False if already active). With ``clears_in=DRAW`` a fault that
        may clear by itself draws whether and when it will; else ``clears_in`` says (seconds,
        or None: it will not)."""
        model = self.models[code]
        if code in self.active:
            return False
        if clears_in is DRAW:
            clears_in = None
            if model.trigger != "condition" and model.self_clear_probability > 0:
                assert model.self_clear_minutes is not None
                if self._rng.random() < model.self_clear_probability:
                    clears_in = self._rng.expovariate(1.0 / (model.self_clear_minutes * 60.0))
        if model.wear is not None:
            data.setdefault(model.wear.counter, round(self.usage[model.wear.part], 3))
        fault = self.active[code] = ActiveFault(model, self.clock.now(), clears_in, dict(data))
        self.raised[code] += 1
        if self.sink is not None:
            detail, event_data, reason = self.describe_raised(fault, detail)
            self.sink.emit_event(
                "fault.raised", code=code, severity=model.severity, detail=detail, data=event_data
            )
            self.report_state(reason)
        return True

    def describe_raised(self, fault: ActiveFault, detail: str) -> tuple[str, dict[str, Any], str]:
        """What ``fault.raised`` says: its detail, its data and the reason of the state change.
        A subclass words them for its machine (the printer names where the paper jammed)."""
        model = fault.model
        data = model.spec.event_data(trigger=model.trigger, field_only=model.field_only, **fault.data)
        return detail or model.meaning, data, f"{model.code}: {model.meaning}"

    def describe_cleared(
        self, fault: ActiveFault, cleared_by: str, detail: str, data: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any], str]:
        """What ``fault.cleared`` says: its detail, its data and the reason of the state change."""
        model = fault.model
        down_seconds = max(0.0, (self.clock.now() - fault.since).total_seconds())
        return (
            detail or f"{model.meaning}: cleared ({cleared_by})",
            {
                "cleared_by": cleared_by,
                "since": format_ts(fault.since),
                "seconds": round(down_seconds, 3),
                **data,
            },
            f"{model.code} cleared",
        )

    def clear(self, code: str, *, cleared_by: str, detail: str = "", **data: Any) -> bool:
        """Clear ``code`` (False if it is not active); ``cleared_by`` is ``self``, ``remote``,
        ``customer`` or ``field``."""
        fault = self.active.pop(code, None)
        if fault is None:
            return False
        if self.sink is not None:
            detail, event_data, reason = self.describe_cleared(fault, cleared_by, detail, data)
            self.sink.emit_event(
                "fault.cleared", code=code, severity=Severity.INFO, detail=detail, data=event_data
            )
            self.report_state(reason)
        return True

    # -- fixes ----------------------------------------------------------------------------------

    def remote_fix(self, action: str, **data: Any) -> dict[str, bool]:
        """``action`` was run remotely: each active fault it can fix is cleared with the
        catalogue's probability. Returns code → cleared."""
        outcomes = {}
        for code, fault in list(self.active.items()):
            chance = fault.model.remote_probability(action)
            if chance <= 0:
                continue
            outcomes[code] = self._fix_rng.random() < chance
            if outcomes[code]:
                self.clear(code, cleared_by="remote", action=action, **data)
        return outcomes

    def draw_fix(self) -> float:
        """A uniform draw from the fix stream, for actions that decide their own outcome."""
        return self._fix_rng.random()

    def guided_fix(self, code: str, guide: int = 0) -> bool:
        """The customer follows guide number ``guide`` of ``code``; True if that cleared it."""
        model = self.models[code]
        if code not in self.active or not 0 <= guide < len(model.guided_fixes):
            return False
        fix = model.guided_fixes[guide]
        if self._fix_rng.random() >= fix.probability:
            return False
        return self.clear(code, cleared_by="customer", guide=fix.title)

    def field_repair(self, **data: Any) -> list[str]:
        """A field engineer on site clears every active fault; the part behind a wear-out
        fault is replaced. Returns the codes cleared."""
        cleared = []
        for code, fault in list(self.active.items()):
            if fault.model.wear is not None:
                self.replace(fault.model.wear.part)
            self.clear(code, cleared_by="field", **data)
            cleared.append(code)
        return cleared
