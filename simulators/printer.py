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
Two hardware faults only a field engineer fixes (no remote action, no guide), when the options
enable them: the fuser wears out (FUSER_WORN, when its pages since replacement reach a life
drawn around ``fuser_life_pages``; the machine starts with a used fuser; the metric
``printer.fuser.wear.percent`` is its pages against the rated life) and the feed roller breaks
(FEED_ROLLER_BROKEN, a mean ``feed_roller_mtbf_pages`` pages apart). Both are ``down``; their
arrivals and lives draw from the fault book's streams, so the jams and pages stay those of the
seed until the first of them strikes.
:meth:`PrinterPlugin.selftest` (the built-in ``selftest`` action delegates to it) checks the jam
sensor, fuser temperature, toner and drum and fails while jammed. ``printer.clear_jam`` is
disruptive (exact policy entry, maintenance windows).
:meth:`PrinterPlugin.fault_catalogue` lists the faults it can raise (sent in the inventory);
:meth:`PrinterPlugin.inject_fault` and :meth:`PrinterPlugin.clear_fault` force a fault and its
clearing at the machine now (tests, demos).

It is a :class:`~simulators.catalogue.SimulatedEquipment`: state, the remembered sink, raising
and clearing the jam with their events, the run loop and option checking are the shared ones.
What is its own: pages, toner, drum and fuser, where the paper jammed (drawn from the printer's
single random stream, in the order it always was, so a seed lives the same life), the words of
its events, and its actions.

Options (all optional; unknown ones are refused):

    seed                    int      random seed (default: derived from the device id)
    pages_per_hour          float    mean print rate while running (default 120)
    jam_rate_per_hour       float    mean paper jams per running hour (default 0.1)
    jam_self_clear_minutes  float    mean time until the customer clears a jam (default: never)
    fuser_life_pages        float    rated fuser life in pages: it wears out (default: never)
    feed_roller_mtbf_pages  float    mean pages between feed roller breakages (default: never)
    color_ratio             float    share of pages printed in colour (default 0.3)
    toner_yield_pages       float    pages per full cartridge, each colour (default 2500)
    drum_life_pages         float    pages until the drum is worn out (default 50000)
    fuser_setpoint_celsius  float    fuser temperature while printing (default 185)
    tick_seconds            float    simulation step, in agent-clock seconds (default 5)
    toner                   mapping  starting levels in percent, e.g. {"black": 11.0}
    model, firmware         str      identity shown in the inventory
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

from agent.clock import Clock
from agent.plugin import ActionContext, ActionResult, ActionSpec, EventSink
from protocol import EquipmentState, Severity, format_ts
from simulators.catalogue import NO_ARGS, EquipmentOptions, Finding, SimulatedEquipment
from simulators.fault_book import ActiveFault, FaultBook
from simulators.faults import FaultModel, FaultSpec, WearOut, occurs, poisson

__all__ = [
    "FEED_ROLLER_BROKEN",
    "FUSER_WORN",
    "LOW_TONER_PERCENT",
    "PAPER_JAM",
    "TONER_COLORS",
    "Jam",
    "PrinterOptions",
    "PrinterPlugin",
]

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
# The jam as the fault book holds it: the printer itself decides when one happens (its own
# random stream, ``jam_rate_per_hour``) and when the customer clears it, so to the book it is a
# condition the machine reports.
_JAM_MODEL = FaultModel(
    code=PAPER_JAM.code,
    meaning=PAPER_JAM.detail,
    severity=PAPER_JAM.severity,
    effect=PAPER_JAM.effect,
    condition="paper jammed (jam_rate_per_hour); cleared by printer.clear_jam or at the printer",
)
_JAM_LOCATIONS = ("tray 1", "tray 2", "fuser", "duplex unit", "output bin")
# Hardware only a field engineer fixes; the option sets the life (rate) of each printer's.
FUSER_WORN = FaultModel(
    code="FUSER_WORN",
    meaning="Fuser unit worn out: toner no longer fuses and printing stopped (replace the fuser)",
    severity=Severity.ERROR,
    effect=EquipmentState.DOWN,
    wear=WearOut(
        part="fuser",
        counter="printer.fuser.pages",
        unit="page",
        threshold=300_000.0,  # fuser_life_pages
        shape=3.0,
        precursor="printer.fuser.wear.percent",
    ),
    field_only=True,
    field_repair_minutes=60.0,
    diagnostics=("printer.status", "selftest"),
)
FEED_ROLLER_BROKEN = FaultModel(
    code="FEED_ROLLER_BROKEN",
    meaning="Paper feed roller broken: the printer cannot pick paper (replace the roller)",
    severity=Severity.ERROR,
    effect=EquipmentState.DOWN,
    mtbf=500_000.0,  # feed_roller_mtbf_pages
    per="page",
    field_only=True,
    field_repair_minutes=45.0,
    diagnostics=("printer.status", "selftest"),
)
FUSER_USED_SHARE = 0.8  # a machine starts with a used fuser: up to this share of its (drawn) life
FUSER_WARN_PERCENT = 90.0
_CLEARED = {"customer": "Paper jam cleared at the printer", "remote": "Paper jam cleared remotely"}


@dataclass(frozen=True, slots=True)
class PrinterOptions(EquipmentOptions):
    pages_per_hour: float = 120.0
    jam_rate_per_hour: float = 0.1
    jam_self_clear_minutes: float | None = None
    fuser_life_pages: float | None = None
    feed_roller_mtbf_pages: float | None = None
    color_ratio: float = 0.3
    toner_yield_pages: float = 2500.0
    drum_life_pages: float = 50000.0
    fuser_setpoint_celsius: float = 185.0
    toner: Mapping[str, float] = field(default_factory=dict)
    model: str = "SimPrint 4000"
    firmware: str = "4.2.1"

    NOUN: ClassVar[str] = "printer"
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = (
        "pages_per_hour",
        "jam_rate_per_hour",
        "color_ratio",
        "fuser_setpoint_celsius",
    )
    POSITIVE: ClassVar[tuple[str, ...]] = ("toner_yield_pages", "drum_life_pages", "tick_seconds")
    FRACTIONS: ClassVar[tuple[str, ...]] = ("color_ratio",)

    def check(self) -> None:
        """The printer's order (which of several bad options is named first): seed, numbers,
        the jam's clearing time, the colour share, the toner levels, the identity."""
        self.check_seed()
        for name in self.NON_NEGATIVE:
            self.check_number(name)
        for name in self.POSITIVE:
            self.check_number(name, positive=True)
        for name in ("jam_self_clear_minutes", "fuser_life_pages", "feed_roller_mtbf_pages"):
            if getattr(self, name) is not None:
                self.check_number(name, positive=True)
        for name in self.FRACTIONS:
            self.check_number(name, fraction=True)
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
        self.check_identity()


@dataclass(frozen=True, slots=True)
class Jam:
    """The active paper jam, as :attr:`PrinterPlugin.jam` shows it."""

    location: str
    since: datetime
    self_clear_in: float | None  # seconds of running time left until the customer clears it


class _JamBook(FaultBook):
    """The printer's fault book: its events say where the paper jammed, in the words they
    always had (no catalogue fields, no downtime on the clear)."""

    __slots__ = ()

    def describe_raised(self, fault: ActiveFault, detail: str) -> tuple[str, dict[str, Any], str]:
        if fault.model.code != PAPER_JAM.code:  # the hardware faults: as the catalogue says
            return super().describe_raised(fault, detail)
        location = fault.data["location"]
        data = PAPER_JAM.event_data(location=location, jams_total=self.raised[PAPER_JAM.code])
        return f"{PAPER_JAM.detail} ({location})", data, f"paper jam ({location})"

    def describe_cleared(
        self, fault: ActiveFault, cleared_by: str, detail: str, data: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any], str]:
        if fault.model.code != PAPER_JAM.code:
            return super().describe_cleared(fault, cleared_by, detail, data)
        location = fault.data["location"]
        said = detail or _CLEARED.get(cleared_by, f"Paper jam cleared ({cleared_by})")
        return (
            f"{said} ({location})",
            {"location": location, "cleared_by": cleared_by, **data},
            "paper jam cleared",
        )


class PrinterPlugin(SimulatedEquipment):
    """The ``sim-printer`` equipment plugin (``fleetcare.equipment`` entry point)."""

    name = "sim-printer"
    FAULTS = (_JAM_MODEL,)
    OPTIONS = PrinterOptions
    BOOK = _JamBook
    KIND = "printer"
    SERIAL_PREFIX = "SP4K-"
    opts: PrinterOptions

    def __init__(
        self, device_id: str, options: Mapping[str, Any] | None = None, *, clock: Clock | None = None
    ) -> None:
        super().__init__(device_id, options, clock=clock)
        rng = self.rng
        # A used machine: some pages behind it, cartridges somewhere between half-empty and full.
        self.pages_total = rng.randint(2_000, 60_000)
        self.toner = {color: round(rng.uniform(35.0, 100.0), 2) for color in TONER_COLORS}
        self.toner.update({color: float(level) for color, level in self.options.toner.items()})
        self.drum_wear = round(rng.uniform(5.0, 60.0), 3)  # drums are replaced; pages are not
        self.fuser_celsius = STANDBY_CELSIUS
        self._low_reported = {color: level < LOW_TONER_PERCENT for color, level in self.toner.items()}
        if FUSER_WORN.code in self.book.models:  # a used fuser, somewhere before its drawn end
            used = random.Random(f"{self.seed}:fuser").uniform(0.0, FUSER_USED_SHARE)  # noqa: S311
            self.book.add_usage("fuser", round(used * self.book.lives[FUSER_WORN.code]))

    def fault_set(self) -> Sequence[FaultModel]:
        """The jam, and the hardware faults the options enable."""
        opts = self.options
        faults = [_JAM_MODEL]
        if opts.fuser_life_pages is not None and FUSER_WORN.wear is not None:
            faults.append(replace(FUSER_WORN, wear=replace(FUSER_WORN.wear, threshold=opts.fuser_life_pages)))
        if opts.feed_roller_mtbf_pages is not None:
            faults.append(replace(FEED_ROLLER_BROKEN, mtbf=opts.feed_roller_mtbf_pages))
        return tuple(faults)

    def field_faults(self) -> dict[str, FaultModel]:
        """The faults only a field engineer fixes (what the behaviours' runbook knows of them)."""
        return {code: model for code, model in self.book.models.items() if model.field_only}

    def machine_rng(self) -> random.Random:
        """One stream for the printer's whole life, seeded with the bare seed (as it always was)."""
        return random.Random(self.seed)  # noqa: S311 - a simulation, not cryptography

    @property
    def options(self) -> PrinterOptions:
        return self.opts

    @property
    def jam(self) -> Jam | None:
        fault = self.book.active.get(PAPER_JAM.code)
        if fault is None:
            return None
        return Jam(location=fault.data["location"], since=fault.since, self_clear_in=fault.clears_in)

    @property
    def jams_total(self) -> int:
        return self.book.raised.get(PAPER_JAM.code, 0)

    # -- EquipmentPlugin ---------------------------------------------------------------------

    def read_metrics(self, now: datetime) -> dict[str, float]:
        metrics = {f"printer.toner.{color}.percent": round(level, 2) for color, level in self.toner.items()}
        metrics.update(
            {
                "printer.pages.total": float(self.pages_total),
                "printer.drum.wear.percent": round(self.drum_wear, 3),
                "printer.fuser.temperature.celsius": round(self.fuser_celsius, 1),
                "printer.jams.total": float(self.book.raised.get(PAPER_JAM.code, 0)),
            }
        )
        if FUSER_WORN.code in self.book.models:
            metrics["printer.fuser.wear.percent"] = round(self.fuser_wear_percent, 3)
        return metrics

    @property
    def fuser_wear_percent(self) -> float:
        """The fuser's pages since its replacement against its rated life, in percent."""
        life = self.options.fuser_life_pages
        return 0.0 if life is None else 100.0 * self.book.usage.get("fuser", 0.0) / life

    def actions(self) -> Sequence[ActionSpec]:
        return [
            ActionSpec(
                "printer.clear_jam",
                self._clear_jam_action,
                "Clear a paper jam: purge the paper path and resume printing.",
                # It moves the paper path of a machine someone may be standing at: only an exact
                # policy entry enables it, and only inside the owner's maintenance windows.
                disruptive=True,
                timeout=30.0,
                args_schema=NO_ARGS,
            ),
            ActionSpec(
                "printer.status",
                self._status_action,
                "Printer state, active fault, consumables, counters and fuser temperature.",
                timeout=5.0,
                args_schema=NO_ARGS,
            ),
        ]

    def findings(self) -> list[Finding]:
        """What :meth:`selftest` checks: jam sensor, fuser temperature, toner and drum. A jam,
        a fuser out of range, an empty cartridge or a worn-out drum fail; low toner and an
        ageing drum are warnings."""
        findings: list[Finding] = []

        def check(name: str, status: str, detail: str) -> None:
            findings.append({"check": name, "status": status, "detail": detail})

        jam = self.jam
        if jam is not None:
            check("jam_sensor", "fail", f"paper jam at {jam.location} since {format_ts(jam.since)}")
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
        if FUSER_WORN.code in self.book.models:
            used = self.fuser_wear_percent
            worn = FUSER_WORN.code in self.book.active
            status = "fail" if worn else "warn" if used >= FUSER_WARN_PERCENT else "pass"
            check(
                "fuser_unit", status, f"{'worn out: replace it; ' if worn else ''}{used:.1f} % of rated life"
            )
        if FEED_ROLLER_BROKEN.code in self.book.models:
            broken = FEED_ROLLER_BROKEN.code in self.book.active
            check(
                "feed_roller",
                "fail" if broken else "pass",
                "broken: replace it" if broken else "picking paper",
            )
        return findings

    def announce(self) -> None:
        """Every start of :meth:`run` says whether the printer is ready."""
        self.book.report_state("printer ready" if self.jam is None else "paper jam", force=True)

    # -- simulation --------------------------------------------------------------------------

    def advance(self, seconds: float, sink: EventSink | None = None) -> int:
        """Let ``seconds`` of equipment time pass; return the pages printed meanwhile."""
        self._remember(sink)
        rng, opts, book = self.rng, self.opts, self.book
        if book.state is EquipmentState.DOWN:  # jammed, or hardware waiting for an engineer
            self._cool(seconds)
            for code in book.count_down(seconds):  # the customer cleared the jam at the machine
                book.clear(code, cleared_by="customer")
            return 0
        pages = poisson(rng, opts.pages_per_hour * seconds / 3600.0)
        if pages:
            self._print(pages)
            self.fuser_celsius = opts.fuser_setpoint_celsius + rng.gauss(0.0, 1.5)
        else:
            self._cool(seconds)
        if len(book.models) > 1:  # the hardware faults: the fuser's wear, the roller's breakage
            book.add_usage("fuser", pages)
            if book.step(seconds, usage={"page": float(pages)}, operating=True):
                return pages  # it broke: no jam on top
        if occurs(rng, opts.jam_rate_per_hour, seconds):
            self._raise_jam()
        return pages

    def force_fault(self, code: str) -> bool:
        if code != PAPER_JAM.code:
            return super().force_fault(code)
        self._raise_jam()
        return True

    def _cool(self, seconds: float) -> None:
        decay = math.exp(-seconds / _FUSER_COOLING_SECONDS)
        self.fuser_celsius = STANDBY_CELSIUS + (self.fuser_celsius - STANDBY_CELSIUS) * decay
        self.fuser_celsius += self.rng.gauss(0.0, 0.3)

    def _print(self, pages: int) -> None:
        opts = self.options
        self.pages_total += pages
        per_page = 100.0 / opts.toner_yield_pages
        used = {"black": pages * per_page}
        for color in TONER_COLORS[1:]:
            used[color] = pages * opts.color_ratio * per_page
        for color, amount in used.items():
            self.toner[color] = max(0.0, self.toner[color] - amount)
            self._check_low(color)
        self.drum_wear = min(100.0, self.drum_wear + pages * 100.0 / opts.drum_life_pages)

    def _check_low(self, color: str) -> None:
        level = self.toner[color]
        if level >= LOW_TONER_PERCENT or self._low_reported[color]:
            return
        self._low_reported[color] = True
        sink = self.book.sink
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

    def _raise_jam(self) -> None:
        """Where it jammed, then (if the customer clears jams) when they will: two draws from
        the printer's stream, before the book raises it."""
        rng = self.rng
        location = rng.choice(_JAM_LOCATIONS)
        mean = self.options.jam_self_clear_minutes
        self_clear = rng.expovariate(1.0 / (mean * 60.0)) if mean is not None else None
        self.book.raise_fault(PAPER_JAM.code, clears_in=self_clear, location=location)

    # -- actions -----------------------------------------------------------------------------

    async def _clear_jam_action(self, args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        jam = self.jam
        if jam is None:
            return ActionResult(
                ok=False,
                output=(
                    f"No paper jam to clear: the printer is {self.state.value} and has no active fault. "
                    "Nothing was changed."
                ),
                data={"state": self.state.value, "jammed": False},
            )
        await ctx.progress(0.5, f"purging the paper path ({jam.location})")
        jam = self.jam
        assert jam is not None, "the jam cleared while the paper path was being purged"
        self.book.clear(PAPER_JAM.code, cleared_by="remote", command_id=ctx.command_id)
        downtime = max(0.0, (ctx.now() - jam.since).total_seconds())
        data: dict[str, Any] = {
            "state": self.state.value,
            "location": jam.location,
            "jammed_since": format_ts(jam.since),
            "down_seconds": round(downtime, 3),
            "jams_total": self.jams_total,
        }
        output = f"Paper jam at {jam.location} cleared; the printer is running again."
        if self.book.active:  # hardware a field engineer must fix keeps it down
            data["still_active"] = sorted(self.book.active)
            output = (
                f"Paper jam at {jam.location} cleared, but the printer is still {self.state.value}: "
                f"{', '.join(data['still_active'])} needs a field engineer."
            )
        return ActionResult(ok=True, output=output, data=data)

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
        jam = self.jam
        if jam is not None:
            data["fault"] = {"code": PAPER_JAM.code, "location": jam.location, "since": format_ts(jam.since)}
        hardware = {c: f for c, f in sorted(self.book.active.items()) if c != PAPER_JAM.code}
        if hardware:  # only a field engineer fixes these
            data["hardware_faults"] = [{"code": c, "since": format_ts(f.since)} for c, f in hardware.items()]
            data["fault"] = data["fault"] or data["hardware_faults"][0]
        faults = [f"PAPER_JAM at {jam.location} since {format_ts(jam.since)}"] if jam else []
        faults += [f"{c} since {format_ts(f.since)} ({f.model.meaning})" for c, f in hardware.items()]
        low = [color for color, level in self.toner.items() if level < LOW_TONER_PERCENT]
        lines = [
            f"{self.options.model} {self.serial} firmware {self.options.firmware}: {self.state.value}",
            "fault: " + ("; ".join(faults) or "none"),
            "toner: " + ", ".join(f"{color} {level:.1f} %" for color, level in self.toner.items()),
            f"pages: {self.pages_total}, jams: {self.jams_total}, drum wear: {self.drum_wear:.1f} %, "
            f"fuser: {self.fuser_celsius:.1f} °C",
        ]
        if low:
            lines.append("low toner: " + ", ".join(low))
        return ActionResult(ok=True, output="\n".join(lines), data=data)
