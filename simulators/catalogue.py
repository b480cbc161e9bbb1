"""A fault catalogue brought to life: the shared machinery of the simulated printer, imaging unit
and chiller.

:class:`~simulators.fault_book.FaultBook` (its own module) holds one machine's active faults
and wear; this module builds the plugins on it.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

from agent import plugin
from agent.clock import Clock, SystemClock
from agent.plugin import ActionContext, ActionHandler, ActionResult, EventSink
from protocol import EquipmentInfo, EquipmentState, format_ts
from simulators.fault_book import FaultBook, stable_seed
from simulators.faults import FaultModel

__all__ = [
    "EquipmentOptions",
    "MachineOptions",
    "SimulatedEquipment",
    "SimulatedMachine",
]

NO_ARGS: Mapping[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


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
        self.book = self.BOOK(self.fault_set(), seed=self.seed, clock=self._clock, multipliers=multipliers)
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

    def fault_set(self) -> Sequence[FaultModel]:
        """The faults this machine can raise, given its options (default: all of ``FAULTS``)."""
        return self.FAULTS

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
        return [model.catalogue_entry() for model in self.book.models.values()]

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

    def clear_fault(self, code: str, sink: EventSink | None = None, *, cleared_by: str = "customer") -> bool:
        """Clear an active fault now, as someone at the machine would (``cleared_by``: the
        customer, or a field engineer for the printer, which has no ``field_service``); a
        wear-out fault's part is replaced, else it would strike again at once. False if it is
        not active."""
        model = self._known(code)
        self._remember(sink)
        if code not in self.book.active:
            return False
        if model.wear is not None:
            self.replace_part(model.wear.part)
        return self.book.clear(code, cleared_by=cleared_by)

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
