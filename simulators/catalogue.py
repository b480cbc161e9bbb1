"""A fault catalogue brought to life: the shared machinery of the simulated printer, imaging unit
and chiller.

:class:`FaultBook` holds one machine's active faults and wear. Each step it lets random faults
strike (a Poisson process per :class:`~simulators.faults.FaultModel`, in operating hours or in
usage units), raises wear-out faults when a part's usage reaches its drawn life, counts down the
self-clearing ones, and reports ``fault.raised`` / ``fault.cleared`` and the resulting state
through the agent's :class:`~agent.plugin.EventSink`. Fix attempts (remote, guided, field) draw
from a random stream of their own, so trying a fix never changes when the next fault arrives:
the same seed gives the same fault arrivals whatever the technicians do.

:class:`SimulatedEquipment` is the plugin side every simulated model shares: options checking
(:class:`EquipmentOptions`), the seed, the run loop on the agent clock, the state, the remembered
sink, ``fault_catalogue()``, ``inject_fault`` / ``clear_fault`` and the self-test report. The
printer builds on it directly: its jam arrives from its own random stream and is fixed only by
``printer.clear_jam`` or at the machine, and it reports its events in the words it always has
(a :class:`FaultBook` subclass says them).

:class:`SimulatedMachine` adds what the catalogue-driven models (imaging unit, chiller) share on
top: per-fault rate multipliers (:class:`MachineOptions`), ``fault_models()``, the hooks the
behaviours drive (``attempt_guided_fix``, ``field_service``) and remote fix actions. The
behaviours look for those hooks by name, so the printer must not have them: a technician's visit
to a printer clears the jam at the machine (``clear_fault``), as it always has.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar, Literal, Self

from agent import plugin
from agent.clock import Clock, SystemClock
from agent.plugin import ActionContext, ActionHandler, ActionResult, EventSink
from protocol import EquipmentInfo, EquipmentState, Severity, format_ts
from simulators.faults import HOUR, FaultModel, occurs_units

__all__ = [
    "DRAW",
    "ActiveFault",
    "EquipmentOptions",
    "FaultBook",
    "MachineOptions",
    "SimulatedEquipment",
    "SimulatedMachine",
    "stable_seed",
]

NO_ARGS: Mapping[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


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


@dataclass(frozen=True, slots=True)
class EquipmentOptions:
    """Options every simulated model takes (subclasses add their own). The checks are small
    methods so that a model can run them in the order its error messages always came in."""

    seed: int | None = None
    tick_seconds: float = 5.0
    model: str = ""
    firmware: str = ""

    NOUN: ClassVar[str] = "machine"
    POSITIVE: ClassVar[tuple[str, ...]] = ("tick_seconds",)
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = ()
    FRACTIONS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> Self:
        """Validate plugin options; ValueError names the offending option."""
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.NOUN} option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        try:
            parsed = cls(**options)
        except TypeError as exc:
            raise ValueError(f"invalid {cls.NOUN} options: {exc}") from exc
        parsed.check()
        return parsed

    def check(self) -> None:
        self.check_numbers()
        self.check_seed()
        self.check_identity()

    def check_numbers(self) -> None:
        """``POSITIVE``, ``NON_NEGATIVE`` and ``FRACTIONS`` (within 0..1), in that order."""
        for name in (*self.POSITIVE, *self.NON_NEGATIVE, *self.FRACTIONS):
            self.check_number(name, positive=name in self.POSITIVE, fraction=name in self.FRACTIONS)

    def check_number(self, name: str, *, positive: bool = False, fraction: bool = False) -> None:
        """Option ``name`` is a finite number >= 0 (> 0 when ``positive``, <= 1 when ``fraction``)."""
        noun, value = self.NOUN, getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{noun} option {name} must be a number, got {value!r}")
        if value < 0 or (positive and value == 0):
            raise ValueError(f"{noun} option {name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
        if fraction and value > 1:
            raise ValueError(f"{noun} option {name} must be within 0..1, got {value!r}")

    def check_seed(self) -> None:
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"{self.NOUN} option seed must be an integer, got {self.seed!r}")

    def check_identity(self) -> None:
        for name in ("model", "firmware"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{self.NOUN} option {name} must be a string")


@dataclass(frozen=True, slots=True)
class MachineOptions(EquipmentOptions):
    """Options every catalogue-driven machine takes: fault rates scaled as a whole or per code."""

    fault_rate_multiplier: float = 1.0
    fault_rates: Mapping[str, float] = field(default_factory=dict)  # code → rate multiplier

    NON_NEGATIVE: ClassVar[tuple[str, ...]] = ("fault_rate_multiplier",)

    def check(self) -> None:
        self.check_numbers()
        self.check_seed()
        noun = self.NOUN
        if not isinstance(self.fault_rates, Mapping):
            raise ValueError(f"{noun} option fault_rates must be a mapping of fault code to multiplier")
        for code, value in self.fault_rates.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{noun} option fault_rates.{code} must be a number >= 0, got {value!r}")
        self.check_identity()


Finding = dict[str, str]


class SimulatedEquipment:
    """Base of the simulated equipment plugins; subclasses define ``name``, ``FAULTS``,
    ``OPTIONS``, :meth:`advance`, :meth:`findings` and the EquipmentPlugin methods."""

    name: str  # an instance variable to the EquipmentPlugin protocol; subclasses set it on the class
    FAULTS: ClassVar[tuple[FaultModel, ...]]
    OPTIONS: ClassVar[type[EquipmentOptions]]
    BOOK: ClassVar[type[FaultBook]] = FaultBook  # a subclass words the events its own way
    KIND: ClassVar[str] = ""  # the inventory's equipment kind, e.g. "printer"
    SERIAL_PREFIX: ClassVar[str] = ""  # e.g. "SP4K-": the serial is this and a hash of the device id

    def __init__(
        self, device_id: str, options: Mapping[str, Any] | None = None, *, clock: Clock | None = None
    ) -> None:
        self.device_id = device_id
        self.opts = self.OPTIONS.from_mapping(options)
        multipliers = self.rate_multipliers()
        self._clock: Clock = clock or SystemClock()
        self.seed = self.opts.seed if self.opts.seed is not None else stable_seed(device_id)
        self.rng = self.machine_rng()
        self.book = self.BOOK(self.FAULTS, seed=self.seed, clock=self._clock, multipliers=multipliers)
        self.serial = (
            self.SERIAL_PREFIX + hashlib.sha256(f"serial:{device_id}".encode()).hexdigest()[:10].upper()
        )

    # -- what subclasses provide ----------------------------------------------------------------

    def machine_rng(self) -> random.Random:
        """The random stream of the machine's own physics (not its fault arrivals or fixes)."""
        return random.Random(f"{self.seed}:machine")  # noqa: S311 - a simulation

    def rate_multipliers(self) -> dict[str, float]:
        """Fault code → rate multiplier (missing: 1)."""
        return {}

    def advance(self, seconds: float, sink: EventSink | None = None) -> object:
        """Let ``seconds`` of equipment time pass (what it returns is the model's business)."""
        raise NotImplementedError

    def findings(self) -> list[Finding]:
        raise NotImplementedError

    def on_replaced(self, part: str) -> None:
        """Hook: reset the physical state that goes with a new ``part``."""

    def force_fault(self, code: str) -> bool:
        """Hook: raise ``code`` (not active) now, as :meth:`inject_fault` does."""
        return self.book.raise_fault(code, injected=True)

    def announce(self) -> None:
        """Hook: the state :meth:`run` reports first."""
        self.book.report_state()

    def selftest_data(self, findings: list[Finding]) -> dict[str, Any]:
        """The ``data`` of the self-test result."""
        return {"state": self.state.value, "findings": findings}

    # -- EquipmentPlugin (shared part) ----------------------------------------------------------

    def equipment_info(self) -> EquipmentInfo:
        return EquipmentInfo(
            kind=self.KIND,
            vendor="Simulated",
            model=self.opts.model,
            serial=self.serial,
            firmware=self.opts.firmware,
        )

    def fault_catalogue(self) -> Sequence[plugin.FaultSpec]:
        """Every fault this machine can raise, for the inventory (``config["faults"]``)."""
        return [model.catalogue_entry() for model in self.FAULTS]

    async def run(self, sink: EventSink) -> None:
        self._remember(sink)
        self.announce()
        tick = self.opts.tick_seconds
        while True:
            await self._clock.sleep(tick)
            self.advance(tick, sink)

    async def selftest(self, ctx: ActionContext) -> ActionResult:
        """The built-in ``selftest`` delegates here; ok=False when any check fails."""
        findings = self.findings()
        failed = [f["check"] for f in findings if f["status"] == "fail"]
        warned = [f["check"] for f in findings if f["status"] == "warn"]
        verdict = (
            f"self-test FAILED: {', '.join(failed)}"
            if failed
            else "self-test passed" + (f" with warnings: {', '.join(warned)}" if warned else "")
        )
        lines = [f"{f['status'].upper():4} {f['check']}: {f['detail']}" for f in findings]
        return ActionResult(
            ok=not failed, output="\n".join([verdict, *lines]), data=self.selftest_data(findings)
        )

    # -- tests, demos and the behaviours --------------------------------------------------------

    @property
    def state(self) -> EquipmentState:
        return self.book.state

    @property
    def attached(self) -> bool:
        """Whether the machine reports to a sink yet (faults injected before are not reported)."""
        return self.book.sink is not None

    def _remember(self, sink: EventSink | None) -> None:
        if sink is not None:
            self.book.sink = sink

    def _known(self, code: str) -> FaultModel:
        model = self.book.models.get(code)
        if model is None:
            raise ValueError(
                f"unknown fault code {code!r}; the {self.opts.NOUN} knows {', '.join(self.book.models)}"
            )
        return model

    def inject_fault(self, code: str, sink: EventSink | None = None) -> bool:
        """Force a fault now (tests, demos). False if it is already active."""
        self._known(code)
        self._remember(sink)
        if code in self.book.active:
            return False
        return self.force_fault(code)

    def clear_fault(self, code: str, sink: EventSink | None = None) -> bool:
        """Clear an active fault now, as someone at the machine would (``cleared_by:
        customer``); a wear-out fault's part is replaced, else it would strike again at once.
        False if it is not active."""
        model = self._known(code)
        self._remember(sink)
        if code not in self.book.active:
            return False
        if model.wear is not None:
            self.replace_part(model.wear.part)
        return self.book.clear(code, cleared_by="customer")

    def replace_part(self, part: str) -> None:
        if part not in self.book.usage:
            raise ValueError(f"unknown part {part!r}; the {self.opts.NOUN} has {', '.join(self.book.usage)}")
        self.book.replace(part)
        self.on_replaced(part)


class SimulatedMachine(SimulatedEquipment):
    """Base of the catalogue-driven simulated equipment plugins (imaging unit, chiller): fault
    rates from the options, the rich fault models and the fix hooks the behaviours drive."""

    OPTIONS: ClassVar[type[MachineOptions]]
    opts: MachineOptions

    def rate_multipliers(self) -> dict[str, float]:
        unknown = sorted(set(self.opts.fault_rates) - {m.code for m in self.FAULTS})
        if unknown:
            raise ValueError(
                f"{self.opts.NOUN} option fault_rates: unknown fault code(s) {', '.join(unknown)}; "
                f"known: {', '.join(m.code for m in self.FAULTS)}"
            )
        return {
            m.code: self.opts.fault_rate_multiplier * self.opts.fault_rates.get(m.code, 1.0)
            for m in self.FAULTS
        }

    def selftest_data(self, findings: list[Finding]) -> dict[str, Any]:
        return {**super().selftest_data(findings), "active_faults": sorted(self.book.active)}

    def fault_models(self) -> dict[str, FaultModel]:
        """The rich catalogue (rates, fixes, wear) for the behaviours and scenario tools."""
        return dict(self.book.models)

    def attempt_guided_fix(self, code: str, guide: int = 0, sink: EventSink | None = None) -> bool:
        """The customer follows guide ``guide`` of ``code`` (the behaviours' hook); True if the
        fault cleared. Seeded: the same attempts give the same outcomes."""
        self._known(code)
        self._remember(sink)
        return self.book.guided_fix(code, guide)

    def field_service(self, sink: EventSink | None = None, parts: Sequence[str] = ()) -> list[str]:
        """A field engineer's visit: every active fault is repaired (worn parts replaced) and
        ``parts`` are replaced as preventive maintenance. Returns the codes cleared."""
        self._remember(sink)
        for part in parts:
            self.replace_part(part)
        worn = [f.model.wear.part for f in self.book.active.values() if f.model.wear is not None]
        cleared = self.book.field_repair(engineer="field")  # replaces the worn parts in the book
        for part in worn:
            self.on_replaced(part)
        return cleared

    # -- remote fix actions ---------------------------------------------------------------------

    def fix_action(self, action: str, doing: str, on_success: str = "") -> ActionHandler:
        """A handler for a remote action that fixes catalogue faults: it clears each active fault
        it can fix with the catalogue's probability, and says honestly when nothing was fixed."""

        async def handle(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
            targets = [c for c, f in self.book.active.items() if f.model.remote_probability(action) > 0]
            if not targets:
                return ActionResult(
                    ok=False,
                    output=(
                        f"Nothing for {action} to fix: the {self.opts.NOUN} is {self.state.value} "
                        f"(active faults: {', '.join(sorted(self.book.active)) or 'none'}). Nothing was changed."
                    ),
                    data={"state": self.state.value, "fixed": [], "still_active": sorted(self.book.active)},
                )
            await ctx.progress(0.5, doing)
            outcomes = self.book.remote_fix(action, command_id=ctx.command_id)
            fixed = sorted(c for c, ok in outcomes.items() if ok)
            failed = sorted(c for c, ok in outcomes.items() if not ok)
            lines = [f"{code}: cleared" for code in fixed] + [
                f"{code}: still active after {action}; try another fix or dispatch a field engineer"
                for code in failed
            ]
            if fixed and on_success:
                lines.append(on_success)
            return ActionResult(
                ok=not failed,
                output="\n".join(lines),
                data={"state": self.state.value, "fixed": fixed, "still_active": sorted(self.book.active)},
            )

        return handle

    def fault_status(self) -> list[dict[str, Any]]:
        return [
            {"code": code, "since": format_ts(f.since), "effect": f.model.effect.value, **f.data}
            for code, f in sorted(self.book.active.items())
        ]
