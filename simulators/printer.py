"""A simulated office printer, seen by the agent exactly as a real equipment plugin would be.

    plugin = PrinterPlugin("sim-printer-0001", {"seed": 7, "pages_per_hour": 240, "jam_rate_per_hour": 0.5})
    AgentRuntime(settings, plugins=[plugin])

Its life, step by step on the agent's clock (:meth:`PrinterPlugin.advance`, driven by
:meth:`PrinterPlugin.run`): pages are printed as a Poisson process; every page uses black toner,
colour pages (``color_ratio``) also use cyan, magenta and yellow; the drum wears; the fuser sits
near its set point while printing and cools towards standby otherwise. While running, a paper
jam happens now and then (``jam_rate_per_hour``): ``fault.raised`` PAPER_JAM, state ``down``,
no printing until ``printer.clear_jam`` (or, if ``jam_self_clear_minutes`` is set, until the
customer clears it at the machine). A toner falling below 10 % sends ``consumable.low`` once.
:meth:`PrinterPlugin.selftest` (the built-in ``selftest`` action delegates to it) checks the jam
sensor, fuser temperature, toner and drum and fails while jammed. ``printer.clear_jam`` is
disruptive (exact policy entry, maintenance windows).
:meth:`PrinterPlugin.fault_catalogue` lists the faults it can raise (sent in the inventory);
:meth:`PrinterPlugin.inject_fault` and :meth:`PrinterPlugin.clear_fault` force a fault and its
clearing at the machine now (tests, demos).

Options (all optional; unknown ones are refused):

    seed                    int      random seed (default: derived from the device id)
    pages_per_hour          float    mean print rate while running (default 120)
    jam_rate_per_hour       float    mean paper jams per running hour (default 0.1)
    jam_self_clear_minutes  float    mean time until the customer clears a jam (default: never)
    color_ratio             float    share of pages printed in colour (default 0.3)
    toner_yield_pages       float    pages per full cartridge, each colour (default 2500)
    drum_life_pages         float    pages until the drum is worn out (default 50000)
    fuser_setpoint_celsius  float    fuser temperature while printing (default 185)
    tick_seconds            float    simulation step, in agent-clock seconds (default 5)
    toner                   mapping  starting levels in percent, e.g. {"black": 11.0}
    model, firmware         str      identity shown in the inventory
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from agent import plugin
from agent.clock import Clock, SystemClock
from agent.plugin import ActionContext, ActionResult, ActionSpec, EventSink
from protocol import EquipmentInfo, EquipmentState, Severity, format_ts
from simulators.faults import FaultSpec, occurs, poisson

__all__ = ["LOW_TONER_PERCENT", "PAPER_JAM", "TONER_COLORS", "PrinterOptions", "PrinterPlugin"]

TONER_COLORS = ("black", "cyan", "magenta", "yellow")
LOW_TONER_PERCENT = 10.0
STANDBY_CELSIUS = 60.0
FUSER_TOLERANCE_CELSIUS = 25.0  # selftest: the fuser may sit this far outside standby..set point
TONER_EMPTY_PERCENT = 1.0
DRUM_WARN_PERCENT = 90.0
_FUSER_COOLING_SECONDS = 120.0  # time constant of the fuser cooling towards standby

PAPER_JAM = FaultSpec(
    code="PAPER_JAM",
    severity=Severity.ERROR,
    effect=EquipmentState.DOWN,
    detail="Paper jam in the paper path: printing stopped",
)
FAULTS = {PAPER_JAM.code: PAPER_JAM}
_JAM_LOCATIONS = ("tray 1", "tray 2", "fuser", "duplex unit", "output bin")


def _stable_seed(device_id: str) -> int:
    return int.from_bytes(hashlib.sha256(device_id.encode()).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class PrinterOptions:
    seed: int | None = None
    pages_per_hour: float = 120.0
    jam_rate_per_hour: float = 0.1
    jam_self_clear_minutes: float | None = None
    color_ratio: float = 0.3
    toner_yield_pages: float = 2500.0
    drum_life_pages: float = 50000.0
    fuser_setpoint_celsius: float = 185.0
    tick_seconds: float = 5.0
    toner: Mapping[str, float] = field(default_factory=dict)
    model: str = "SimPrint 4000"
    firmware: str = "4.2.1"

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> PrinterOptions:
        """Validate plugin options; ValueError names the offending option."""
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"unknown printer option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        try:
            parsed = cls(**options)
        except TypeError as exc:
            raise ValueError(f"invalid printer options: {exc}") from exc
        parsed._check()
        return parsed

    def _check(self) -> None:
        def number(name: str, *, positive: bool = False) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"printer option {name} must be a number, got {value!r}")
            if value < 0 or (positive and value == 0):
                raise ValueError(
                    f"printer option {name} must be {'> 0' if positive else '>= 0'}, got {value!r}"
                )

        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"printer option seed must be an integer, got {self.seed!r}")
        for name in ("pages_per_hour", "jam_rate_per_hour", "color_ratio", "fuser_setpoint_celsius"):
            number(name)
        for name in ("toner_yield_pages", "drum_life_pages", "tick_seconds"):
            number(name, positive=True)
        if self.jam_self_clear_minutes is not None:
            number("jam_self_clear_minutes", positive=True)
        if self.color_ratio > 1:
            raise ValueError(f"printer option color_ratio must be within 0..1, got {self.color_ratio!r}")
        if not isinstance(self.toner, Mapping):
            raise ValueError(
                f"printer option toner must be a mapping of colour to percent, got {self.toner!r}"
            )
        for color, level in self.toner.items():
            if color not in TONER_COLORS:
                raise ValueError(
                    f"printer option toner: unknown colour {color!r} (known: {', '.join(TONER_COLORS)})"
                )
            if isinstance(level, bool) or not isinstance(level, int | float) or not 0 <= level <= 100:
                raise ValueError(f"printer option toner.{color} must be a percentage 0..100, got {level!r}")
        for name in ("model", "firmware"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"printer option {name} must be a string")


@dataclass(slots=True)
class _Jam:
    location: str
    since: datetime
    self_clear_in: float | None  # seconds of running time left until the customer clears it


class PrinterPlugin:
    """The ``sim-printer`` equipment plugin (``fleetcare.equipment`` entry point)."""

    name = "sim-printer"

    def __init__(
        self, device_id: str, options: Mapping[str, Any] | None = None, *, clock: Clock | None = None
    ) -> None:
        self.device_id = device_id
        self.options = PrinterOptions.from_mapping(options)
        self._clock: Clock = clock or SystemClock()
        seed = self.options.seed if self.options.seed is not None else _stable_seed(device_id)
        self._rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography
        rng = self._rng
        self.serial = "SP4K-" + hashlib.sha256(f"serial:{device_id}".encode()).hexdigest()[:10].upper()
        # A used machine: some pages behind it, cartridges somewhere between half-empty and full.
        self.pages_total = rng.randint(2_000, 60_000)
        self.toner = {color: round(rng.uniform(35.0, 100.0), 2) for color in TONER_COLORS}
        self.toner.update({color: float(level) for color, level in self.options.toner.items()})
        self.drum_wear = round(rng.uniform(5.0, 60.0), 3)  # drums are replaced; pages are not
        self.fuser_celsius = STANDBY_CELSIUS
        self.jams_total = 0
        self.jam: _Jam | None = None
        self._page_carry = 0.0
        self._low_reported = {color: level < LOW_TONER_PERCENT for color, level in self.toner.items()}
        self._sink: EventSink | None = None

    # -- EquipmentPlugin ---------------------------------------------------------------------

    def equipment_info(self) -> EquipmentInfo:
        return EquipmentInfo(
            kind="printer",
            vendor="Simulated",
            model=self.options.model,
            serial=self.serial,
            firmware=self.options.firmware,
        )

    def read_metrics(self, now: datetime) -> dict[str, float]:
        metrics = {f"printer.toner.{color}.percent": round(level, 2) for color, level in self.toner.items()}
        metrics.update(
            {
                "printer.pages.total": float(self.pages_total),
                "printer.drum.wear.percent": round(self.drum_wear, 3),
                "printer.fuser.temperature.celsius": round(self.fuser_celsius, 1),
                "printer.jams.total": float(self.jams_total),
            }
        )
        return metrics

    def actions(self) -> Sequence[ActionSpec]:
        no_args: Mapping[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
        return [
            ActionSpec(
                "printer.clear_jam",
                self._clear_jam_action,
                "Clear a paper jam: purge the paper path and resume printing.",
                # It moves the paper path of a machine someone may be standing at: only an exact
                # policy entry enables it, and only inside the owner's maintenance windows.
                disruptive=True,
                timeout=30.0,
                args_schema=no_args,
            ),
            ActionSpec(
                "printer.status",
                self._status_action,
                "Printer state, active fault, consumables, counters and fuser temperature.",
                timeout=5.0,
                args_schema=no_args,
            ),
        ]

    async def selftest(self, ctx: ActionContext) -> ActionResult:
        """The built-in ``selftest`` delegates here: jam sensor, fuser temperature, toner and
        drum. ok=False when any check fails (a jam, a fuser out of range, an empty cartridge,
        a worn-out drum); low toner and an ageing drum are warnings."""
        findings: list[dict[str, str]] = []

        def check(name: str, status: str, detail: str) -> None:
            findings.append({"check": name, "status": status, "detail": detail})

        if self.jam is not None:
            check("jam_sensor", "fail", f"paper jam at {self.jam.location} since {format_ts(self.jam.since)}")
        else:
            check("jam_sensor", "pass", "paper path clear")
        low, high = (
            STANDBY_CELSIUS - FUSER_TOLERANCE_CELSIUS,
            self.options.fuser_setpoint_celsius + FUSER_TOLERANCE_CELSIUS,
        )
        fuser = self.fuser_celsius
        in_range = low <= fuser <= high
        check(
            "fuser",
            "pass" if in_range else "fail",
            f"{fuser:.1f} °C ({'within' if in_range else 'outside'} {low:.0f}-{high:.0f} °C)",
        )
        for color, level in self.toner.items():
            status = (
                "fail" if level <= TONER_EMPTY_PERCENT else "warn" if level < LOW_TONER_PERCENT else "pass"
            )
            check(f"toner.{color}", status, f"{level:.1f} %")
        wear = self.drum_wear
        drum = "fail" if wear >= 100.0 else "warn" if wear >= DRUM_WARN_PERCENT else "pass"
        check("drum", drum, f"{wear:.1f} % worn")
        failed = [f for f in findings if f["status"] == "fail"]
        warned = [f for f in findings if f["status"] == "warn"]
        lines = [f"{f['status'].upper():4} {f['check']}: {f['detail']}" for f in findings]
        verdict = (
            f"self-test FAILED: {', '.join(f['check'] for f in failed)}"
            if failed
            else "self-test passed"
            + (f" with warnings: {', '.join(f['check'] for f in warned)}" if warned else "")
        )
        return ActionResult(
            ok=not failed,
            output="\n".join([verdict, *lines]),
            data={"state": self.state.value, "findings": findings},
        )

    def fault_catalogue(self) -> Sequence[plugin.FaultSpec]:
        """Every fault the printer can raise, for the inventory (``config["faults"]``)."""
        return [spec.catalogue_entry() for spec in FAULTS.values()]

    async def run(self, sink: EventSink) -> None:
        self._sink = sink
        sink.set_state(self.state, "printer ready" if self.jam is None else "paper jam")
        tick = self.options.tick_seconds
        while True:
            await self._clock.sleep(tick)
            self.advance(tick, sink)

    # -- simulation --------------------------------------------------------------------------

    @property
    def state(self) -> EquipmentState:
        return EquipmentState.DOWN if self.jam is not None else EquipmentState.RUNNING

    def advance(self, seconds: float, sink: EventSink | None = None) -> int:
        """Let ``seconds`` of equipment time pass; return the pages printed meanwhile."""
        sink = self._remember(sink)
        rng, opts = self._rng, self.options
        if self.jam is not None:
            self._cool(seconds)
            if self.jam.self_clear_in is not None:
                self.jam.self_clear_in -= seconds
                if self.jam.self_clear_in <= 0:
                    self._clear(sink, cleared_by="customer", detail="Paper jam cleared at the printer")
            return 0
        pages = poisson(rng, opts.pages_per_hour * seconds / 3600.0)
        if pages:
            self._print(pages, sink)
            self.fuser_celsius = opts.fuser_setpoint_celsius + rng.gauss(0.0, 1.5)
        else:
            self._cool(seconds)
        if occurs(rng, opts.jam_rate_per_hour, seconds):
            self._raise_jam(sink)
        return pages

    def inject_fault(self, code: str, sink: EventSink | None = None) -> bool:
        """Force a fault now (tests, demos). False if it is already active."""
        if code not in FAULTS:
            raise ValueError(f"unknown fault code {code!r}; the printer knows {', '.join(FAULTS)}")
        if self.jam is not None:
            return False
        self._raise_jam(self._remember(sink))
        return True

    def clear_fault(self, code: str, sink: EventSink | None = None) -> bool:
        """Clear an active fault now, as the customer would at the machine (tests, demos):
        ``fault.cleared`` with ``cleared_by: customer``, state ``running``. False if it is not
        active."""
        if code not in FAULTS:
            raise ValueError(f"unknown fault code {code!r}; the printer knows {', '.join(FAULTS)}")
        sink = self._remember(sink)
        if self.jam is None:
            return False
        self._clear(sink, cleared_by="customer", detail="Paper jam cleared at the printer")
        return True

    @property
    def attached(self) -> bool:
        """Whether the printer reports to a sink yet (:meth:`run` started, or one was passed):
        a fault injected before is not reported."""
        return self._sink is not None

    def _remember(self, sink: EventSink | None) -> EventSink | None:
        if sink is not None:
            self._sink = sink
        return self._sink

    def _cool(self, seconds: float) -> None:
        decay = math.exp(-seconds / _FUSER_COOLING_SECONDS)
        self.fuser_celsius = STANDBY_CELSIUS + (self.fuser_celsius - STANDBY_CELSIUS) * decay
        self.fuser_celsius += self._rng.gauss(0.0, 0.3)

    def _print(self, pages: int, sink: EventSink | None) -> None:
        opts = self.options
        self.pages_total += pages
        per_page = 100.0 / opts.toner_yield_pages
        used = {"black": pages * per_page}
        for color in TONER_COLORS[1:]:
            used[color] = pages * opts.color_ratio * per_page
        for color, amount in used.items():
            self.toner[color] = max(0.0, self.toner[color] - amount)
            self._check_low(color, sink)
        self.drum_wear = min(100.0, self.drum_wear + pages * 100.0 / opts.drum_life_pages)

    def _check_low(self, color: str, sink: EventSink | None) -> None:
        level = self.toner[color]
        if level >= LOW_TONER_PERCENT or self._low_reported[color]:
            return
        self._low_reported[color] = True
        if sink is not None:
            sink.emit_event(
                "consumable.low",
                code=f"TONER_LOW_{color.upper()}",
                severity=Severity.WARNING,
                detail=f"{color.capitalize()} toner low: {level:.1f} %",
                data={
                    "consumable": f"toner.{color}",
                    "percent": round(level, 2),
                    "threshold": LOW_TONER_PERCENT,
                },
            )

    def _raise_jam(self, sink: EventSink | None) -> None:
        rng = self._rng
        location = rng.choice(_JAM_LOCATIONS)
        mean = self.options.jam_self_clear_minutes
        self_clear = rng.expovariate(1.0 / (mean * 60.0)) if mean is not None else None
        self.jam = _Jam(location=location, since=self._clock.now(), self_clear_in=self_clear)
        self.jams_total += 1
        if sink is not None:
            sink.emit_event(
                "fault.raised",
                code=PAPER_JAM.code,
                severity=PAPER_JAM.severity,
                detail=f"{PAPER_JAM.detail} ({location})",
                data=PAPER_JAM.event_data(location=location, jams_total=self.jams_total),
            )
            sink.set_state(PAPER_JAM.effect, f"paper jam ({location})")

    def _clear(self, sink: EventSink | None, *, cleared_by: str, detail: str, **data: Any) -> _Jam:
        jam = self.jam
        assert jam is not None
        self.jam = None
        if sink is not None:
            sink.emit_event(
                "fault.cleared",
                code=PAPER_JAM.code,
                severity=Severity.INFO,
                detail=f"{detail} ({jam.location})",
                data={"location": jam.location, "cleared_by": cleared_by, **data},
            )
            sink.set_state(EquipmentState.RUNNING, "paper jam cleared")
        return jam

    # -- actions -----------------------------------------------------------------------------

    async def _clear_jam_action(self, args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        if self.jam is None:
            return ActionResult(
                ok=False,
                output=(
                    f"No paper jam to clear: the printer is {self.state.value} and has no active fault. "
                    "Nothing was changed."
                ),
                data={"state": self.state.value, "jammed": False},
            )
        await ctx.progress(0.5, f"purging the paper path ({self.jam.location})")
        jam = self._clear(
            self._sink, cleared_by="remote", detail="Paper jam cleared remotely", command_id=ctx.command_id
        )
        downtime = max(0.0, (ctx.now() - jam.since).total_seconds())
        return ActionResult(
            ok=True,
            output=f"Paper jam at {jam.location} cleared; the printer is running again.",
            data={
                "state": self.state.value,
                "location": jam.location,
                "jammed_since": format_ts(jam.since),
                "down_seconds": round(downtime, 3),
                "jams_total": self.jams_total,
            },
        )

    async def _status_action(self, args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        data: dict[str, Any] = {
            "state": self.state.value,
            "fault": None,
            "model": self.options.model,
            "serial": self.serial,
            "firmware": self.options.firmware,
            "toner_percent": {color: round(level, 2) for color, level in self.toner.items()},
            "pages_total": self.pages_total,
            "drum_wear_percent": round(self.drum_wear, 3),
            "fuser_celsius": round(self.fuser_celsius, 1),
            "jams_total": self.jams_total,
        }
        if self.jam is not None:
            data["fault"] = {
                "code": PAPER_JAM.code,
                "location": self.jam.location,
                "since": format_ts(self.jam.since),
            }
        low = [color for color, level in self.toner.items() if level < LOW_TONER_PERCENT]
        lines = [
            f"{self.options.model} {self.serial} firmware {self.options.firmware}: {self.state.value}",
            f"fault: PAPER_JAM at {self.jam.location} since {format_ts(self.jam.since)}"
            if self.jam
            else "fault: none",
            "toner: " + ", ".join(f"{color} {level:.1f} %" for color, level in self.toner.items()),
            f"pages: {self.pages_total}, jams: {self.jams_total}, drum wear: {self.drum_wear:.1f} %, "
            f"fuser: {self.fuser_celsius:.1f} °C",
        ]
        if low:
            lines.append("low toner: " + ", ".join(low))
        return ActionResult(ok=True, output="\n".join(lines), data=data)
