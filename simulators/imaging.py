"""A simulated medical imaging unit (a digital X-ray room with its acquisition workstation).

    plugin = ImagingPlugin("sim-xray-0001", {"seed": 7, "exposures_per_hour": 12})
    AgentRuntime(settings, plugins=[plugin])

Its life, step by step on the agent's clock (:meth:`ImagingPlugin.advance`): exposures are a
Poisson process (``exposures_per_hour``), now and then a burst of them (a trauma series,
``burst_rate_per_hour``); each heats the tube, which cools exponentially towards ambient
(``tube_cooling_minutes``). Above ``overheat_celsius`` the unit raises TUBE_OVERHEAT (degraded:
exposures are throttled) and clears it once the tube is below ``cooled_celsius``. Every exposure
wears the tube (TUBE_FAILURE when its drawn life is reached; arcing rises before, the precursor)
and drifts the detector calibration (DETECTOR_CALIBRATION_DRIFT at 3 %, reset by
``imaging.calibrate_detector``). The acquisition service crashes and PACS becomes unreachable at
random (:data:`IMAGING_FAULTS` gives every rate and fix). Images taken while PACS is unreachable
queue on the workstation and are sent when it is back.

Options (all optional; unknown ones are refused): ``seed``, ``tick_seconds`` (default 5),
``exposures_per_hour`` (12), ``burst_rate_per_hour`` (0.005), ``burst_exposures`` (20, mean),
``heat_per_exposure_celsius`` (3), ``tube_cooling_minutes`` (30), ``ambient_celsius`` (24),
``overheat_celsius`` (75), ``cooled_celsius`` (60), ``tube_exposures`` and
``detector_exposures`` (usage since the tube's replacement and the last calibration; default
random), ``fault_rate_multiplier``, ``fault_rates`` ({code: multiplier}, also ageing wear-outs
faster), ``model``, ``firmware``.
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
from simulators.faults import FaultModel, GuidedFix, RemoteFix, WearOut, occurs, poisson

__all__ = [
    "ACQ_SERVICE_CRASH",
    "DETECTOR_CALIBRATION_DRIFT",
    "DRIFT_LIMIT_PERCENT",
    "IMAGING_FAULTS",
    "PACS_UNREACHABLE",
    "TUBE_FAILURE",
    "TUBE_OVERHEAT",
    "ImagingOptions",
    "ImagingPlugin",
]

DRIFT_LIMIT_PERCENT = 3.0  # detector calibration drift at which images are out of tolerance
ARCING_BASE_PER_1000 = 0.2
ARCING_WARN_PER_1000 = 3.0

ACQ_SERVICE_CRASH = FaultModel(
    code="ACQ_SERVICE_CRASH",
    meaning="Acquisition service crashed: no images can be taken",
    severity=Severity.ERROR,
    effect=EquipmentState.DOWN,
    mtbf=250.0,
    self_clear_probability=0.6,  # the watchdog restarts it
    self_clear_minutes=4.0,
    remote_fixes=(RemoteFix("imaging.restart_acquisition", 0.9),),
    guided_fixes=(
        GuidedFix(
            "Restart the acquisition workstation",
            (
                "Finish or cancel the current study",
                "Choose Shut down > Restart on the acquisition workstation",
                "Wait for the exam list to appear and take a test exposure",
            ),
            0.75,
        ),
    ),
    diagnostics=("imaging.status", "selftest"),
)
PACS_UNREACHABLE = FaultModel(
    code="PACS_UNREACHABLE",
    meaning="PACS unreachable: images queue on the workstation and do not reach the archive",
    severity=Severity.ERROR,
    effect=EquipmentState.DEGRADED,
    mtbf=400.0,
    self_clear_probability=0.5,  # the hospital network or the PACS comes back
    self_clear_minutes=40.0,
    remote_fixes=(RemoteFix("imaging.retry_pacs", 0.2),),
    guided_fixes=(
        GuidedFix(
            "Check the network connection to the archive (PACS)",
            (
                "Check that the network cable at the back of the workstation is plugged in and its light is on",
                "Ask the hospital IT desk whether the PACS or the network is down",
                "Once they confirm it is up, press 'Resend queue' in the workstation's job list",
            ),
            0.7,
        ),
    ),
    diagnostics=("network.check", "imaging.pacs_status"),
    external=True,
)
DETECTOR_CALIBRATION_DRIFT = FaultModel(
    code="DETECTOR_CALIBRATION_DRIFT",
    meaning=f"Detector calibration drifted beyond {DRIFT_LIMIT_PERCENT:g} %: image quality out of tolerance",
    severity=Severity.WARNING,
    effect=EquipmentState.DEGRADED,
    wear=WearOut(
        part="detector",
        counter="imaging.detector.exposures",
        unit="exposure",
        threshold=5000.0,
        shape=2.0,
        precursor="imaging.detector.drift.percent",
    ),
    remote_fixes=(RemoteFix("imaging.calibrate_detector", 0.9),),
    guided_fixes=(
        GuidedFix(
            "Calibrate the detector with the flat-field phantom",
            (
                "Remove the patient table pad and place the calibration phantom on the detector",
                "Start Service > Detector calibration on the workstation and follow the prompts",
                "Take the test exposure it asks for and check the result says PASSED",
            ),
            0.6,
        ),
    ),
    diagnostics=("imaging.status", "selftest"),
)
TUBE_OVERHEAT = FaultModel(
    code="TUBE_OVERHEAT",
    meaning="X-ray tube too hot: exposures are throttled until it cools",
    severity=Severity.WARNING,
    effect=EquipmentState.DEGRADED,
    condition="tube temperature above overheat_celsius; clears below cooled_celsius",
    self_clear_probability=1.0,
    self_clear_minutes=10.0,
    diagnostics=("imaging.status",),
)
TUBE_FAILURE = FaultModel(
    code="TUBE_FAILURE",
    meaning="X-ray tube failed: no exposures possible until the tube is replaced",
    severity=Severity.CRITICAL,
    effect=EquipmentState.DOWN,
    wear=WearOut(
        part="tube",
        counter="imaging.tube.exposures",
        unit="exposure",
        threshold=150_000.0,
        shape=4.0,
        precursor="imaging.tube.arcing.per_1000",
    ),
    field_only=True,
    field_repair_minutes=240.0,
    diagnostics=("imaging.status", "selftest"),
)
IMAGING_FAULTS = (
    ACQ_SERVICE_CRASH,
    PACS_UNREACHABLE,
    DETECTOR_CALIBRATION_DRIFT,
    TUBE_OVERHEAT,
    TUBE_FAILURE,
)


@dataclass(frozen=True, slots=True)
class ImagingOptions(MachineOptions):
    exposures_per_hour: float = 12.0
    burst_rate_per_hour: float = 0.005
    burst_exposures: float = 20.0
    heat_per_exposure_celsius: float = 3.0
    tube_cooling_minutes: float = 30.0
    ambient_celsius: float = 24.0
    overheat_celsius: float = 75.0
    cooled_celsius: float = 60.0
    tube_exposures: float | None = None
    detector_exposures: float | None = None
    model: str = "SimRad DR-500"
    firmware: str = "7.3.0"

    NOUN: ClassVar[str] = "imaging unit"
    POSITIVE: ClassVar[tuple[str, ...]] = ("tick_seconds", "tube_cooling_minutes")
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = (
        "fault_rate_multiplier",
        "exposures_per_hour",
        "burst_rate_per_hour",
        "burst_exposures",
        "heat_per_exposure_celsius",
    )

    def check(self) -> None:
        MachineOptions.check(self)
        for name in ("tube_exposures", "detector_exposures"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise ValueError(f"imaging unit option {name} must be a number >= 0, got {value!r}")
        if not self.ambient_celsius < self.cooled_celsius < self.overheat_celsius:
            raise ValueError(
                "imaging unit options must satisfy ambient_celsius < cooled_celsius < overheat_celsius, got "
                f"{self.ambient_celsius!r}, {self.cooled_celsius!r}, {self.overheat_celsius!r}"
            )


class ImagingPlugin(SimulatedMachine):
    """The ``sim-imaging`` equipment plugin (``fleetcare.equipment`` entry point)."""

    name = "sim-imaging"
    FAULTS = IMAGING_FAULTS
    OPTIONS = ImagingOptions

    def __init__(
        self, device_id: str, options: Mapping[str, Any] | None = None, *, clock: Clock | None = None
    ) -> None:
        super().__init__(device_id, options, clock=clock)
        opts = self.options
        rng = self.rng
        self.serial = "DR5-" + hashlib.sha256(f"serial:{device_id}".encode()).hexdigest()[:10].upper()
        tube = TUBE_FAILURE.wear
        detector = DETECTOR_CALIBRATION_DRIFT.wear
        assert tube is not None
        assert detector is not None
        # An installed unit: its tube part-way through its life, calibrated a while ago.
        self.book.usage["tube"] = (
            opts.tube_exposures if opts.tube_exposures is not None else rng.uniform(0.0, 0.6) * tube.threshold
        )
        self.book.usage["detector"] = (
            opts.detector_exposures
            if opts.detector_exposures is not None
            else rng.uniform(0.0, 0.5) * detector.threshold
        )
        self.exposures_total = int(self.book.usage["tube"]) + rng.randint(0, 400_000)
        self.tube_celsius = opts.ambient_celsius
        self.operating_hours = 0.0
        self.pacs_queue = 0
        self.pacs_sent = 0
        self.tube_replacements = 0
        self.calibrations = 0
        self._arcing = ARCING_BASE_PER_1000
        self._drift = 0.0
        self._update_precursors()

    @property
    def options(self) -> ImagingOptions:
        assert isinstance(self.opts, ImagingOptions)
        return self.opts

    # -- EquipmentPlugin ------------------------------------------------------------------------

    def equipment_info(self) -> EquipmentInfo:
        return EquipmentInfo(
            kind="imaging",
            vendor="Simulated",
            model=self.options.model,
            serial=self.serial,
            firmware=self.options.firmware,
        )

    def read_metrics(self, now: datetime) -> dict[str, float]:
        active = self.book.active
        return {
            "imaging.tube.temperature.celsius": round(self.tube_celsius, 2),
            "imaging.exposures.total": float(self.exposures_total),
            "imaging.tube.exposures": round(self.book.usage["tube"], 1),
            "imaging.tube.arcing.per_1000": round(self._arcing, 3),
            "imaging.detector.exposures": round(self.book.usage["detector"], 1),
            "imaging.detector.drift.percent": round(self._drift, 3),
            "imaging.acquisition.up": 0.0 if ACQ_SERVICE_CRASH.code in active else 1.0,
            "imaging.acquisition.crashes.total": float(self.book.raised[ACQ_SERVICE_CRASH.code]),
            "imaging.pacs.reachable": 0.0 if PACS_UNREACHABLE.code in active else 1.0,
            "imaging.pacs.queue.images": float(self.pacs_queue),
            "imaging.operating.hours": round(self.operating_hours, 4),
        }

    def actions(self) -> Sequence[ActionSpec]:
        return [
            ActionSpec(
                "imaging.status",
                self._status_action,
                "Unit state, active faults, tube, detector calibration and PACS link.",
                timeout=5.0,
                args_schema=NO_ARGS,
            ),
            ActionSpec(
                "imaging.restart_acquisition",
                self.fix_action(
                    "imaging.restart_acquisition",
                    "restarting the acquisition service",
                    "The acquisition service is running again.",
                ),
                "Restart the acquisition service (a study in progress is interrupted).",
                disruptive=True,
                timeout=60.0,
                args_schema=NO_ARGS,
            ),
            ActionSpec(
                "imaging.calibrate_detector",
                self._calibrate_action,
                "Recalibrate the detector (gain and offset maps); the unit cannot expose meanwhile.",
                disruptive=True,
                timeout=300.0,
                args_schema={
                    "type": "object",
                    "properties": {"mode": {"type": "string", "enum": ["offset", "gain", "full"]}},
                    "additionalProperties": False,
                },
            ),
            ActionSpec(
                "imaging.retry_pacs",
                self.fix_action(
                    "imaging.retry_pacs",
                    "re-opening the DICOM association and resending the queue",
                    "Queued images are being sent to PACS.",
                ),
                "Re-open the DICOM association to PACS and resend queued images.",
                timeout=60.0,
                args_schema=NO_ARGS,
            ),
            ActionSpec(
                "imaging.pacs_status",
                self._pacs_status_action,
                "DICOM echo to PACS and the state of the send queue (diagnosis only).",
                timeout=10.0,
                args_schema=NO_ARGS,
            ),
        ]

    # -- simulation -----------------------------------------------------------------------------

    def advance(self, seconds: float, sink: EventSink | None = None) -> int:
        """Let ``seconds`` of equipment time pass; return the exposures taken meanwhile."""
        self._remember(sink)
        rng, opts, active = self.rng, self.options, self.book.active
        operating = self.state is not EquipmentState.DOWN
        overheated = TUBE_OVERHEAT.code in active
        exposures = 0
        if operating:
            self.operating_hours += seconds / 3600.0
            rate = opts.exposures_per_hour * (0.5 if overheated else 1.0)
            exposures = poisson(rng, rate * seconds / 3600.0)
            if not overheated and occurs(rng, opts.burst_rate_per_hour, seconds):
                exposures += poisson(rng, opts.burst_exposures)
        ambient = opts.ambient_celsius
        decay = math.exp(-seconds / (opts.tube_cooling_minutes * 60.0))
        heat = sum(opts.heat_per_exposure_celsius * rng.uniform(0.8, 1.2) for _ in range(exposures))
        self.tube_celsius = ambient + (self.tube_celsius - ambient) * decay + heat
        if exposures:
            self.exposures_total += exposures
            self.book.add_usage("tube", exposures)
            self.book.add_usage("detector", exposures)
        if PACS_UNREACHABLE.code in active:
            self.pacs_queue += exposures
        else:
            self.pacs_sent += self.pacs_queue + exposures
            self.pacs_queue = 0
        if self.tube_celsius > opts.overheat_celsius and not overheated:
            self.book.raise_fault(TUBE_OVERHEAT.code, tube_celsius=round(self.tube_celsius, 1))
        elif overheated and self.tube_celsius < opts.cooled_celsius:
            self.book.clear(
                TUBE_OVERHEAT.code,
                cleared_by="self",
                detail=f"X-ray tube cooled to {self.tube_celsius:.1f} °C",
                tube_celsius=round(self.tube_celsius, 1),
            )
        self.book.step(seconds, usage={"exposure": float(exposures)}, operating=operating)
        self._update_precursors()
        return exposures

    def _update_precursors(self) -> None:
        """Arcing climbs steeply as the tube nears its (drawn) end of life; the calibration
        drift grows with exposures since the last calibration. Both with measurement noise."""
        rng = self.rng
        wear = self.book.wear_fraction(TUBE_FAILURE.code)
        self._arcing = max(0.0, ARCING_BASE_PER_1000 + 12.0 * wear**4 + rng.gauss(0.0, 0.05))
        drift = self.book.wear_fraction(DETECTOR_CALIBRATION_DRIFT.code)
        self._drift = max(0.0, DRIFT_LIMIT_PERCENT * drift + rng.gauss(0.0, 0.03))

    def on_replaced(self, part: str) -> None:
        if part == "tube":
            self.tube_replacements += 1
            self.tube_celsius = self.options.ambient_celsius
        elif part == "detector":
            self.calibrations += 1
        self._update_precursors()

    def findings(self) -> list[Finding]:
        active, opts = self.book.active, self.options

        def finding(check: str, status: str, detail: str) -> Finding:
            return {"check": check, "status": status, "detail": detail}

        out = [
            finding("acquisition_service", "fail", "not running (crashed)")
            if ACQ_SERVICE_CRASH.code in active
            else finding("acquisition_service", "pass", "running")
        ]
        if TUBE_FAILURE.code in active:
            out.append(finding("tube", "fail", "no tube current: the tube must be replaced"))
        else:
            status = "warn" if self._arcing >= ARCING_WARN_PER_1000 else "pass"
            out.append(
                finding(
                    "tube",
                    status,
                    f"arcing {self._arcing:.2f} per 1000 exposures, {self.book.usage['tube']:.0f} exposures",
                )
            )
        hot = self.tube_celsius > opts.cooled_celsius or TUBE_OVERHEAT.code in active
        out.append(
            finding(
                "tube_temperature",
                "warn" if hot else "pass",
                f"{self.tube_celsius:.1f} °C (limit {opts.overheat_celsius:g} °C)",
            )
        )
        if DETECTOR_CALIBRATION_DRIFT.code in active:
            drift_status = "fail"
        else:
            drift_status = "warn" if self._drift >= 0.8 * DRIFT_LIMIT_PERCENT else "pass"
        out.append(
            finding(
                "detector_calibration",
                drift_status,
                f"drift {self._drift:.2f} % (limit {DRIFT_LIMIT_PERCENT:g} %)",
            )
        )
        if PACS_UNREACHABLE.code in active:
            out.append(
                finding(
                    "pacs",
                    "fail",
                    f"DICOM echo failed, {self.pacs_queue} images queued: check the hospital network and PACS",
                )
            )
        else:
            out.append(finding("pacs", "pass", "DICOM echo ok"))
        return out

    # -- actions --------------------------------------------------------------------------------

    async def _calibrate_action(self, args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        """Calibration is also preventive: it resets the drift whether or not the fault is
        active, and fails with the catalogue's odds."""
        mode = str(args.get("mode", "full"))
        await ctx.progress(0.3, f"{mode} calibration: acquiring dark and flat fields")
        chance = DETECTOR_CALIBRATION_DRIFT.remote_probability("imaging.calibrate_detector")
        active = DETECTOR_CALIBRATION_DRIFT.code in self.book.active
        if self.book.draw_fix() >= chance:
            return ActionResult(
                ok=False,
                output=(
                    f"{mode} calibration failed (flat field not uniform); the previous calibration is kept. "
                    "Run it again, or ask the site to calibrate with the phantom (guided steps)."
                ),
                data={"state": self.state.value, "fixed": [], "drift_percent": round(self._drift, 3)},
            )
        before = self._drift
        self.replace_part("detector")
        fixed = []
        if active and self.book.clear(
            DETECTOR_CALIBRATION_DRIFT.code,
            cleared_by="remote",
            action="imaging.calibrate_detector",
            command_id=ctx.command_id,
        ):
            fixed.append(DETECTOR_CALIBRATION_DRIFT.code)
        return ActionResult(
            ok=True,
            output=f"{mode} calibration done: drift {before:.2f} % -> {self._drift:.2f} %.",
            data={
                "state": self.state.value,
                "fixed": fixed,
                "drift_before_percent": round(before, 3),
                "drift_percent": round(self._drift, 3),
            },
        )

    async def _pacs_status_action(self, args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        reachable = PACS_UNREACHABLE.code not in self.book.active
        return ActionResult(
            ok=reachable,
            output=(
                f"DICOM echo to PACS: ok; {self.pacs_sent} images sent, queue empty."
                if reachable
                else f"DICOM echo to PACS: no answer; {self.pacs_queue} images queued. The cause is usually "
                "outside the unit (hospital network or the PACS itself): run network.check, then the guide."
            ),
            data={"reachable": reachable, "queued": self.pacs_queue, "sent": self.pacs_sent},
        )

    async def _status_action(self, args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        opts = self.options
        metrics = self.read_metrics(ctx.now())
        faults = self.fault_status()
        lines = [
            f"{opts.model} {self.serial} firmware {opts.firmware}: {self.state.value}",
            "faults: " + (", ".join(f["code"] for f in faults) or "none"),
            f"tube: {self.tube_celsius:.1f} °C, {self.book.usage['tube']:.0f} exposures, "
            f"arcing {self._arcing:.2f}/1000",
            f"detector: drift {self._drift:.2f} % after {self.book.usage['detector']:.0f} exposures",
            f"PACS: {'reachable' if metrics['imaging.pacs.reachable'] else 'unreachable'}, "
            f"{self.pacs_queue} queued",
        ]
        return ActionResult(
            ok=True,
            output="\n".join(lines),
            data={"state": self.state.value, "faults": faults, "metrics": metrics, "serial": self.serial},
        )
