"""A simulated industrial water chiller (one screw compressor, air-cooled condenser).

    plugin = ChillerPlugin("sim-chiller-0001", {"seed": 7, "setpoint_celsius": 7})
    AgentRuntime(settings, plugins=[plugin])

Its life, step by step on the agent's clock (:meth:`ChillerPlugin.advance`): while the
compressor runs, the supply water sits near the set point and the return water a few degrees
above with the process load; when it stops (a trip, a high-pressure cut-out, a failed bearing)
the supply warms towards the return. Every running hour wears the compressor bearing: vibration
climbs (ISO 10816 zones: warn at 4.5 mm/s, fail at 7.1) as the bearing nears its drawn life,
then BEARING_FAILURE stops the machine until a field engineer replaces it — the precursor a
forecast can find. Refrigerant seeps slowly; a leak (LOW_REFRIGERANT) drops it sharply and
lowers capacity. A drifting supply sensor (SENSOR_DRIFT) makes the controller chill to the wrong
temperature. :data:`CHILLER_FAULTS` gives every rate and fix.

Options (all optional; unknown ones are refused): ``seed``, ``tick_seconds`` (default 5),
``setpoint_celsius`` (7), ``load_delta_celsius`` (5, return minus supply at full load),
``ambient_celsius`` (30, condenser air), ``bearing_hours`` (running hours since the bearing was
replaced; default random), ``refrigerant_percent`` (charge; default random 94-100),
``seepage_percent_per_day`` (0.01), ``fault_rate_multiplier``, ``fault_rates`` ({code:
multiplier}, also ageing the bearing faster), ``model``, ``firmware``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from agent.clock import Clock
from agent.plugin import ActionContext, ActionResult, ActionSpec, EventSink
from protocol import EquipmentInfo, EquipmentState, Severity
from simulators.catalogue import NO_ARGS, Finding, MachineOptions, SimulatedMachine
from simulators.faults import FaultModel, GuidedFix, RemoteFix, WearOut

__all__ = [
    "BEARING_FAILURE",
    "CHILLER_FAULTS",
    "COMPRESSOR_TRIP",
    "HIGH_HEAD_PRESSURE",
    "LOW_REFRIGERANT",
    "SENSOR_DRIFT",
    "VIBRATION_FAIL_MM_S",
    "VIBRATION_WARN_MM_S",
    "ChillerOptions",
    "ChillerPlugin",
]

VIBRATION_BASE_MM_S = 1.8
VIBRATION_WARN_MM_S = 4.5  # ISO 10816-3 zone C: restricted operation
VIBRATION_FAIL_MM_S = 7.1  # zone D: damage
REFRIGERANT_WARN_PERCENT = 90.0
HEAD_PRESSURE_TRIP_BAR = 24.0
_SUPPLY_TIME_CONSTANT_S = 900.0  # how fast the supply water follows the compressor

COMPRESSOR_TRIP = FaultModel(
    code="COMPRESSOR_TRIP",
    meaning="Compressor tripped (motor protection): no cooling",
    severity=Severity.ERROR,
    effect=EquipmentState.DOWN,
    mtbf=400.0,
    self_clear_probability=0.6,  # the controller restarts it after the anti-short-cycle delay
    self_clear_minutes=10.0,
    remote_fixes=(RemoteFix("chiller.reset_compressor", 0.85),),
    guided_fixes=(
        GuidedFix(
            "Reset the compressor at the control panel",
            (
                "Open the control panel door (the unit stays powered)",
                "Press the compressor RESET button for two seconds",
                "Check the compressor starts within five minutes and the RUN light is on",
            ),
            0.8,
        ),
    ),
    diagnostics=("chiller.status", "selftest"),
)
HIGH_HEAD_PRESSURE = FaultModel(
    code="HIGH_HEAD_PRESSURE",
    meaning=f"High head pressure cut-out (above {HEAD_PRESSURE_TRIP_BAR:g} bar): compressor stopped",
    severity=Severity.ERROR,
    effect=EquipmentState.DOWN,
    mtbf=800.0,
    self_clear_probability=0.2,
    self_clear_minutes=30.0,
    remote_fixes=(RemoteFix("chiller.reset_compressor", 0.7),),
    guided_fixes=(
        GuidedFix(
            "Clear the condenser airflow",
            (
                "Remove leaves, plastic or anything else blocking the condenser coil",
                "Check that every condenser fan turns",
                "Press the compressor RESET button",
            ),
            0.6,
        ),
    ),
    diagnostics=("chiller.status", "selftest"),
)
SENSOR_DRIFT = FaultModel(
    code="SENSOR_DRIFT",
    meaning="Supply temperature sensor disagrees with the reference sensor: control is off target",
    severity=Severity.WARNING,
    effect=EquipmentState.DEGRADED,
    mtbf=2500.0,
    remote_fixes=(RemoteFix("chiller.recalibrate_sensors", 0.8),),
    diagnostics=("chiller.status", "selftest"),
)
LOW_REFRIGERANT = FaultModel(
    code="LOW_REFRIGERANT",
    meaning="Refrigerant charge low (leak): reduced cooling capacity",
    severity=Severity.ERROR,
    effect=EquipmentState.DEGRADED,
    mtbf=5000.0,
    field_only=True,
    field_repair_minutes=180.0,
    diagnostics=("chiller.status", "selftest"),
)
BEARING_FAILURE = FaultModel(
    code="BEARING_FAILURE",
    meaning="Compressor bearing failed: compressor locked out until the bearing is replaced",
    severity=Severity.CRITICAL,
    effect=EquipmentState.DOWN,
    wear=WearOut(
        part="bearing",
        counter="chiller.bearing.hours",
        unit="hour",
        threshold=20_000.0,
        shape=3.5,
        precursor="chiller.compressor.vibration.mm_s",
    ),
    field_only=True,
    field_repair_minutes=300.0,
    diagnostics=("chiller.status", "selftest"),
)
CHILLER_FAULTS = (COMPRESSOR_TRIP, HIGH_HEAD_PRESSURE, SENSOR_DRIFT, LOW_REFRIGERANT, BEARING_FAILURE)
_STOPPING = {COMPRESSOR_TRIP.code, HIGH_HEAD_PRESSURE.code, BEARING_FAILURE.code}


@dataclass(frozen=True, slots=True)
class ChillerOptions(MachineOptions):
    setpoint_celsius: float = 7.0
    load_delta_celsius: float = 5.0
    ambient_celsius: float = 30.0
    bearing_hours: float | None = None
    refrigerant_percent: float | None = None
    seepage_percent_per_day: float = 0.01
    model: str = "SimChill SC-350"
    firmware: str = "3.8.2"

    NOUN: ClassVar[str] = "chiller"
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = (
        "fault_rate_multiplier",
        "load_delta_celsius",
        "seepage_percent_per_day",
    )

    def check(self) -> None:
        MachineOptions.check(self)
        for name in ("setpoint_celsius", "ambient_celsius"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not -40 <= value <= 60:
                raise ValueError(
                    f"chiller option {name} must be a temperature within -40..60 °C, got {value!r}"
                )
        if self.bearing_hours is not None and (
            isinstance(self.bearing_hours, bool)
            or not isinstance(self.bearing_hours, int | float)
            or self.bearing_hours < 0
        ):
            raise ValueError(
                f"chiller option bearing_hours must be a number >= 0, got {self.bearing_hours!r}"
            )
        level = self.refrigerant_percent
        if level is not None and (
            isinstance(level, bool) or not isinstance(level, int | float) or not 0 <= level <= 100
        ):
            raise ValueError(f"chiller option refrigerant_percent must be a percentage 0..100, got {level!r}")


class ChillerPlugin(SimulatedMachine):
    """The ``sim-chiller`` equipment plugin (``fleetcare.equipment`` entry point)."""

    name = "sim-chiller"
    FAULTS = CHILLER_FAULTS
    OPTIONS = ChillerOptions

    def __init__(
        self, device_id: str, options: Mapping[str, Any] | None = None, *, clock: Clock | None = None
    ) -> None:
        super().__init__(device_id, options, clock=clock)
        opts, rng = self.options, self.rng
        self.serial = "SC3-" + hashlib.sha256(f"serial:{device_id}".encode()).hexdigest()[:10].upper()
        bearing = BEARING_FAILURE.wear
        assert bearing is not None
        self.book.usage["bearing"] = (
            opts.bearing_hours
            if opts.bearing_hours is not None
            else rng.uniform(0.0, 0.6) * bearing.threshold
        )
        self.run_hours = self.book.usage["bearing"] + rng.uniform(0.0, 30_000.0)
        self.refrigerant = (
            opts.refrigerant_percent if opts.refrigerant_percent is not None else rng.uniform(94.0, 100.0)
        )
        self.starts = rng.randint(500, 5000)
        self.supply_celsius = opts.setpoint_celsius
        self.return_celsius = opts.setpoint_celsius + opts.load_delta_celsius
        self.sensor_offset = 0.0
        self.pressure_bar = 0.0
        self.vibration = 0.0
        self.bearing_replacements = 0
        self._was_running = True
        self._measure()

    @property
    def options(self) -> ChillerOptions:
        assert isinstance(self.opts, ChillerOptions)
        return self.opts

    @property
    def compressor_running(self) -> bool:
        return not _STOPPING & self.book.active.keys()

    # -- EquipmentPlugin ------------------------------------------------------------------------

    def equipment_info(self) -> EquipmentInfo:
        return EquipmentInfo(
            kind="chiller",
            vendor="Simulated",
            model=self.options.model,
            serial=self.serial,
            firmware=self.options.firmware,
        )

    def read_metrics(self, now: datetime) -> dict[str, float]:
        bearing = BEARING_FAILURE.wear
        assert bearing is not None
        return {
            "chiller.supply.temperature.celsius": round(self.supply_celsius + self.sensor_offset, 2),
            "chiller.return.temperature.celsius": round(self.return_celsius, 2),
            "chiller.compressor.pressure.bar": round(self.pressure_bar, 2),
            "chiller.compressor.vibration.mm_s": round(self.vibration, 3),
            "chiller.compressor.running": 1.0 if self.compressor_running else 0.0,
            "chiller.compressor.run.hours": round(self.run_hours, 3),
            "chiller.compressor.starts.total": float(self.starts),
            "chiller.bearing.hours": round(self.book.usage["bearing"], 3),
            # The maintenance plan's estimate (hours against the nominal mean life); vibration
            # is what tells this bearing's actual state.
            "chiller.bearing.wear.percent": round(100.0 * self.book.usage["bearing"] / bearing.mean_life, 2),
            "chiller.refrigerant.level.percent": round(self.refrigerant, 2),
        }

    def actions(self) -> Sequence[ActionSpec]:
        return [
            ActionSpec(
                "chiller.status",
                self._status_action,
                "Chiller state, active faults, temperatures, pressure, vibration and refrigerant.",
                timeout=5.0,
                args_schema=NO_ARGS,
            ),
            ActionSpec(
                "chiller.reset_compressor",
                self.fix_action(
                    "chiller.reset_compressor",
                    "resetting the compressor protection and restarting",
                    "The compressor restarted.",
                ),
                "Reset the compressor's protection and restart it (cooling stops meanwhile).",
                disruptive=True,
                timeout=120.0,
                args_schema=NO_ARGS,
            ),
            ActionSpec(
                "chiller.recalibrate_sensors",
                self.fix_action(
                    "chiller.recalibrate_sensors",
                    "comparing sensors with the reference and writing new offsets",
                    "Sensor offsets recalibrated.",
                ),
                "Recalibrate temperature sensor offsets against the reference sensor (control setpoints shift).",
                disruptive=True,
                timeout=120.0,
                args_schema={
                    "type": "object",
                    "properties": {"sensor": {"type": "string", "enum": ["supply", "return", "all"]}},
                    "additionalProperties": False,
                },
            ),
        ]

    # -- simulation -----------------------------------------------------------------------------

    def advance(self, seconds: float, sink: EventSink | None = None) -> None:
        """Let ``seconds`` of equipment time pass."""
        self._remember(sink)
        rng, opts = self.rng, self.options
        running = self.compressor_running
        if running and not self._was_running:
            self.starts += 1
        self._was_running = running
        hours = seconds / 3600.0
        if running:
            self.run_hours += hours
            self.book.add_usage("bearing", hours)
        self.refrigerant = max(0.0, self.refrigerant - opts.seepage_percent_per_day * seconds / 86400.0)
        load = opts.load_delta_celsius * (0.8 + 0.2 * math.sin(self.run_hours / 24.0 * 2 * math.pi))
        if running:
            # The controller chills until the (possibly drifted) sensor reads the set point; a
            # short charge cannot get there.
            target = opts.setpoint_celsius - self.sensor_offset
            if LOW_REFRIGERANT.code in self.book.active:
                target += 0.6 * load
        else:
            # The process keeps heating the loop, up to about the process temperature.
            target = opts.setpoint_celsius + 3.0 * opts.load_delta_celsius
        follow = 1.0 - math.exp(-seconds / _SUPPLY_TIME_CONSTANT_S)
        self.supply_celsius += (target - self.supply_celsius) * follow + rng.gauss(0.0, 0.05)
        spread = load if running else 0.3 * load  # without cooling the loop evens out
        self.return_celsius = self.supply_celsius + spread + rng.gauss(0.0, 0.05)
        raised = self.book.step(seconds, usage={}, operating=running)
        if SENSOR_DRIFT.code in raised:
            self.sensor_offset = rng.choice((-1.0, 1.0)) * rng.uniform(1.5, 3.0)
        if LOW_REFRIGERANT.code in raised:
            self.refrigerant = min(self.refrigerant, rng.uniform(65.0, 80.0))
        if SENSOR_DRIFT.code not in self.book.active:
            self.sensor_offset = 0.0
        self._measure()

    def _measure(self) -> None:
        """Pressure and vibration as the sensors read them now (noise drawn here, not in
        ``read_metrics``, so a run does not depend on how often telemetry is read)."""
        rng, opts, active = self.rng, self.options, self.book.active
        wear = self.book.wear_fraction(BEARING_FAILURE.code)
        if HIGH_HEAD_PRESSURE.code in active:
            self.pressure_bar = HEAD_PRESSURE_TRIP_BAR + rng.uniform(0.5, 2.0)
        elif self.compressor_running:
            charge = min(1.0, self.refrigerant / 100.0)
            self.pressure_bar = (14.0 + 0.3 * (opts.ambient_celsius - 30.0)) * (0.6 + 0.4 * charge)
            self.pressure_bar += rng.gauss(0.0, 0.15)
        else:
            self.pressure_bar = 8.0 + rng.gauss(0.0, 0.1)  # equalised at standstill
        if self.compressor_running:
            self.vibration = max(0.1, VIBRATION_BASE_MM_S + 6.0 * wear**4 + rng.gauss(0.0, 0.1))
        else:
            self.vibration = max(0.0, 0.1 + rng.gauss(0.0, 0.02))

    def on_replaced(self, part: str) -> None:
        if part == "bearing":
            self.bearing_replacements += 1
        self._measure()

    def field_service(self, sink: EventSink | None = None, parts: Sequence[str] = ()) -> list[str]:
        """As :meth:`SimulatedMachine.field_service`; the engineer also fixes a leak and
        recharges the refrigerant, and replaces a drifted sensor."""
        if LOW_REFRIGERANT.code in self.book.active or "refrigerant" in parts:
            self.refrigerant = 100.0
        self.sensor_offset = 0.0
        return super().field_service(sink, [p for p in parts if p != "refrigerant"])

    def findings(self) -> list[Finding]:
        active = self.book.active

        def finding(check: str, status: str, detail: str) -> Finding:
            return {"check": check, "status": status, "detail": detail}

        stopped = sorted(_STOPPING & active.keys())
        out = [
            finding("compressor", "fail", f"stopped: {', '.join(stopped)}")
            if stopped
            else finding("compressor", "pass", f"running, {self.starts} starts")
        ]
        pressure = "fail" if self.pressure_bar >= HEAD_PRESSURE_TRIP_BAR else "pass"
        out.append(
            finding(
                "head_pressure", pressure, f"{self.pressure_bar:.1f} bar (cut-out {HEAD_PRESSURE_TRIP_BAR:g})"
            )
        )
        vibration = (
            "fail"
            if self.vibration >= VIBRATION_FAIL_MM_S or BEARING_FAILURE.code in active
            else "warn"
            if self.vibration >= VIBRATION_WARN_MM_S
            else "pass"
        )
        out.append(finding("vibration", vibration, f"{self.vibration:.2f} mm/s"))
        refrigerant = (
            "fail"
            if LOW_REFRIGERANT.code in active
            else "warn"
            if self.refrigerant < REFRIGERANT_WARN_PERCENT
            else "pass"
        )
        out.append(finding("refrigerant", refrigerant, f"{self.refrigerant:.1f} % charge"))
        if SENSOR_DRIFT.code in active:
            out.append(
                finding("sensors", "fail", f"supply sensor off the reference by {self.sensor_offset:+.1f} K")
            )
        else:
            out.append(finding("sensors", "pass", "supply sensor agrees with the reference"))
        return out

    # -- actions --------------------------------------------------------------------------------

    async def _status_action(self, args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        opts = self.options
        metrics = self.read_metrics(ctx.now())
        faults = self.fault_status()
        lines = [
            f"{opts.model} {self.serial} firmware {opts.firmware}: {self.state.value}",
            "faults: " + (", ".join(f["code"] for f in faults) or "none"),
            f"water: supply {metrics['chiller.supply.temperature.celsius']:.1f} °C "
            f"(set point {opts.setpoint_celsius:g}), return {self.return_celsius:.1f} °C",
            f"compressor: {'running' if self.compressor_running else 'stopped'}, {self.pressure_bar:.1f} bar, "
            f"vibration {self.vibration:.2f} mm/s, {self.run_hours:.0f} h",
            f"refrigerant: {self.refrigerant:.1f} %",
        ]
        return ActionResult(
            ok=True,
            output="\n".join(lines),
            data={"state": self.state.value, "faults": faults, "metrics": metrics, "serial": self.serial},
        )
