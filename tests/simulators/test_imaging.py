"""The simulated imaging unit: against a fake sink and clock, and once under the real AgentRuntime."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import AgentRuntime
from agent.plugin import ActionResult, EquipmentPlugin
from protocol import EquipmentState, Event, Inventory, Telemetry, decode_uplink
from simulators.imaging import (
    ACQ_SERVICE_CRASH,
    ARCING_WARN_PER_1000,
    DETECTOR_CALIBRATION_DRIFT,
    DRIFT_LIMIT_PERCENT,
    PACS_UNREACHABLE,
    TUBE_FAILURE,
    TUBE_OVERHEAT,
    ImagingPlugin,
)
from tests.agent.support import ManualClock, make_settings, write_public_key
from tests.simulators.support import T0, FakeClock, FakeContext, FakeSink, within

QUIET = {"burst_rate_per_hour": 0.0}


def unit(clock: FakeClock | None = None, **options: Any) -> ImagingPlugin:
    options.setdefault("seed", 42)
    return ImagingPlugin("sim-imaging-test", options, clock=clock or FakeClock())


async def act(plugin: ImagingPlugin, name: str, ctx: FakeContext | None = None, **args: Any) -> ActionResult:
    spec = next(a for a in plugin.actions() if a.name == name)
    return await spec.handler(args, ctx or FakeContext(FakeClock()))


def test_imaging_unit_is_an_equipment_plugin_with_its_metrics() -> None:
    plugin: EquipmentPlugin = unit()
    info = plugin.equipment_info()
    assert (plugin.name, info.kind, info.vendor) == ("sim-imaging", "imaging", "Simulated")
    metrics = plugin.read_metrics(T0)
    assert {
        "imaging.tube.temperature.celsius",
        "imaging.exposures.total",
        "imaging.tube.arcing.per_1000",
        "imaging.detector.drift.percent",
        "imaging.acquisition.up",
        "imaging.pacs.reachable",
    } <= set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_random_faults_strike_at_the_catalogue_rates() -> None:
    """A long accelerated run (rates x20, a technician fixing everything within a step): each
    random fault's count matches operating hours / MTBF."""
    plugin, sink = unit(fault_rate_multiplier=20.0, tick_seconds=600, **QUIET), FakeSink()
    plugin.book.multipliers[TUBE_FAILURE.code] = plugin.book.multipliers[DETECTOR_CALIBRATION_DRIFT.code] = (
        0.0
    )
    for _ in range(6 * 4000):
        plugin.advance(600.0, sink)
        if plugin.book.active:
            plugin.field_service()
    hours = plugin.operating_hours
    for fault in (ACQ_SERVICE_CRASH, PACS_UNREACHABLE):
        assert fault.mtbf is not None
        expected = hours * 20.0 / fault.mtbf
        assert within(plugin.book.raised[fault.code], expected, math.sqrt(expected)), fault.code
    assert len(sink.named("fault.raised")) == sum(plugin.book.raised.values())


def test_tube_arcing_rises_before_the_tube_fails_and_a_field_visit_replaces_it() -> None:
    options = {"exposures_per_hour": 600.0, "heat_per_exposure_celsius": 0.0, "tube_exposures": 0}
    plugin = unit(fault_rates={"TUBE_FAILURE": 40.0, "DETECTOR_CALIBRATION_DRIFT": 0.0}, **options, **QUIET)
    sink = FakeSink()
    arcing: list[float] = []
    while TUBE_FAILURE.code not in plugin.book.active:
        plugin.advance(600.0, sink)
        for code in plugin.book.active.keys() - {TUBE_FAILURE.code}:  # random faults: fixed at once
            plugin.book.clear(code, cleared_by="field")
        arcing.append(plugin.read_metrics(T0)["imaging.tube.arcing.per_1000"])
        assert len(arcing) < 10_000
    tenth = max(1, len(arcing) // 10)
    assert statistics_mean(arcing[-tenth:]) > 3 * statistics_mean(arcing[: len(arcing) // 2])
    assert arcing[-2] >= ARCING_WARN_PER_1000  # the last reading before the failure warned
    assert plugin.state is EquipmentState.DOWN
    [raised] = [e for e in sink.named("fault.raised") if e["code"] == TUBE_FAILURE.code]
    assert raised["data"]["field_only"] is True
    exposures = plugin.exposures_total
    plugin.advance(3600.0, sink)
    assert plugin.exposures_total == exposures  # down: no exposures
    assert plugin.field_service(sink) == [TUBE_FAILURE.code]
    assert plugin.tube_replacements == 1
    assert plugin.read_metrics(T0)["imaging.tube.arcing.per_1000"] < 1.0
    assert sink.named("fault.cleared")[-1]["data"]["cleared_by"] == "field"


def statistics_mean(values: list[float]) -> float:
    return sum(values) / len(values)


async def test_no_remote_action_clears_a_tube_failure() -> None:
    plugin, sink = unit(), FakeSink()
    plugin.inject_fault(TUBE_FAILURE.code, sink)
    for name in ("imaging.restart_acquisition", "imaging.retry_pacs"):
        result = await act(plugin, name)
        assert not result.ok
        assert "Nothing for" in result.output
    assert TUBE_FAILURE.code in plugin.book.active


def test_a_burst_overheats_the_tube_which_clears_once_cooled() -> None:
    """A burst of exposures overheats the tube (degraded); a unit as hot, without bursts,
    clears the fault by itself once the tube is below ``cooled_celsius``."""
    plugin, sink = unit(exposures_per_hour=0.0, burst_rate_per_hour=3600.0, burst_exposures=30.0), FakeSink()
    plugin.advance(5.0, sink)
    assert TUBE_OVERHEAT.code in plugin.book.active
    assert plugin.state is EquipmentState.DEGRADED
    quiet = unit(exposures_per_hour=0.0, burst_rate_per_hour=0.0)
    quiet.tube_celsius = plugin.tube_celsius
    quiet.inject_fault(TUBE_OVERHEAT.code, sink)
    for _ in range(12 * 6):
        quiet.advance(300.0, sink)
        if TUBE_OVERHEAT.code not in quiet.book.active:
            break
    assert quiet.state is EquipmentState.RUNNING
    cleared = sink.named("fault.cleared")[-1]
    assert (cleared["code"], cleared["data"]["cleared_by"]) == (TUBE_OVERHEAT.code, "self")
    assert cleared["data"]["tube_celsius"] < quiet.options.cooled_celsius


async def test_restart_acquisition_clears_a_crash_with_the_catalogue_probability() -> None:
    plugin, sink = unit(**QUIET), FakeSink()
    n, fixed = 400, 0
    for _ in range(n):
        plugin.inject_fault(ACQ_SERVICE_CRASH.code, sink)
        result = await act(plugin, "imaging.restart_acquisition")
        fixed += result.ok
        assert result.ok == (ACQ_SERVICE_CRASH.code not in plugin.book.active)
        plugin.book.clear(ACQ_SERVICE_CRASH.code, cleared_by="field")
    p = ACQ_SERVICE_CRASH.remote_probability("imaging.restart_acquisition")
    assert within(fixed, n * p, math.sqrt(n * p * (1 - p)))
    remote = [e for e in sink.named("fault.cleared") if e["data"]["cleared_by"] == "remote"]
    assert len(remote) == fixed
    assert remote[0]["data"]["action"] == "imaging.restart_acquisition"


async def test_detector_drift_reaches_its_limit_then_calibration_resets_it() -> None:
    plugin, sink = unit(exposures_per_hour=300.0, detector_exposures=0, **QUIET), FakeSink()
    plugin.book.multipliers[TUBE_FAILURE.code] = 0.0
    drift: list[float] = []
    for _ in range(5000):
        plugin.advance(600.0, sink)
        for code in plugin.book.active.keys() - {DETECTOR_CALIBRATION_DRIFT.code}:
            plugin.book.clear(code, cleared_by="field")
        drift.append(plugin.read_metrics(T0)["imaging.detector.drift.percent"])
        if DETECTOR_CALIBRATION_DRIFT.code in plugin.book.active:
            break
    assert plugin.state is EquipmentState.DEGRADED
    assert drift[-1] >= DRIFT_LIMIT_PERCENT - 0.2
    assert drift[0] < 1.0
    for _ in range(10):  # the calibration fails now and then (catalogue: 90 % success)
        result = await act(plugin, "imaging.calibrate_detector", mode="full")
        if result.ok:
            break
    assert result.ok, result.output
    assert result.data["fixed"] == [DETECTOR_CALIBRATION_DRIFT.code]
    assert plugin.read_metrics(T0)["imaging.detector.drift.percent"] < 0.5
    assert plugin.state is EquipmentState.RUNNING


async def test_pacs_outage_queues_images_and_is_diagnosed_as_external() -> None:
    plugin, sink = unit(exposures_per_hour=120.0, **QUIET), FakeSink()
    plugin.inject_fault(PACS_UNREACHABLE.code, sink)
    assert plugin.state is EquipmentState.DEGRADED
    taken = sum(plugin.advance(60.0, sink) for _ in range(10) if PACS_UNREACHABLE.code in plugin.book.active)
    assert plugin.read_metrics(T0)["imaging.pacs.queue.images"] == taken > 0
    diagnosis = await act(plugin, "imaging.pacs_status")
    assert not diagnosis.ok
    assert "network.check" in diagnosis.output
    assert diagnosis.data == {"reachable": False, "queued": taken, "sent": plugin.pacs_sent}
    while not plugin.attempt_guided_fix(PACS_UNREACHABLE.code, sink=sink):
        assert PACS_UNREACHABLE.code in plugin.book.active
    cleared = sink.named("fault.cleared")[-1]
    assert cleared["data"]["cleared_by"] == "customer"
    assert cleared["data"]["guide"] == PACS_UNREACHABLE.guided_fixes[0].title
    plugin.advance(60.0, sink)
    assert plugin.pacs_queue == 0


async def test_selftest_reports_each_subsystem() -> None:
    clock = FakeClock()
    plugin, sink = unit(clock, detector_exposures=0, tube_exposures=0, **QUIET), FakeSink()
    healthy = await plugin.selftest(FakeContext(clock))
    assert healthy.ok, healthy.output
    checks = {f["check"] for f in healthy.data["findings"]}
    assert checks == {"acquisition_service", "tube", "tube_temperature", "detector_calibration", "pacs"}
    plugin.inject_fault(ACQ_SERVICE_CRASH.code, sink)
    plugin.inject_fault(PACS_UNREACHABLE.code, sink)
    broken = await plugin.selftest(FakeContext(clock))
    assert not broken.ok
    failed = {f["check"] for f in broken.data["findings"] if f["status"] == "fail"}
    assert failed == {"acquisition_service", "pacs"}
    assert broken.output.startswith("self-test FAILED")
    assert broken.data["active_faults"] == [ACQ_SERVICE_CRASH.code, PACS_UNREACHABLE.code]


def test_actions_are_flagged_disruptive_where_they_change_the_unit() -> None:
    specs = {spec.name: spec for spec in unit().actions()}
    assert {n for n, s in specs.items() if s.disruptive} == {
        "imaging.restart_acquisition",
        "imaging.calibrate_detector",
    }
    assert specs["imaging.calibrate_detector"].args_schema["properties"]["mode"]["enum"] == [
        "offset",
        "gain",
        "full",
    ]
    assert all(s.args_schema.get("additionalProperties") is False for s in specs.values())


def test_same_seed_same_life() -> None:
    def life(seed: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
        plugin, sink = unit(seed=seed, fault_rate_multiplier=30.0, burst_rate_per_hour=0.5), FakeSink()
        for step in range(3000):
            plugin.advance(300.0, sink)
            if step % 50 == 0:
                plugin.field_service(sink)
        return sink.events, plugin.read_metrics(T0)

    first = life(7)
    assert life(7) == first
    assert life(8) != first
    assert {e["event"] for e in first[0]} == {"fault.raised", "fault.cleared"}


def test_bad_options_and_unknown_faults_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown imaging unit option"):
        unit(exposures_per_minute=3)
    with pytest.raises(ValueError, match="cooled_celsius"):
        unit(cooled_celsius=90.0)
    with pytest.raises(ValueError, match="fault_rates: unknown fault code"):
        unit(fault_rates={"ON_FIRE": 2.0})
    with pytest.raises(ValueError, match="unknown fault code"):
        unit().inject_fault("ON_FIRE")


async def test_runs_under_the_real_agent_runtime(tmp_path: Path) -> None:
    """Offline agent (plaintext to a closed port): inventory with the catalogue, telemetry with
    the unit's metrics, and an injected fault as an event plus a state change, all in the outbox."""
    key = write_public_key(Ed25519PrivateKey.generate(), tmp_path / "server.pub")
    clock = ManualClock()
    plugin = ImagingPlugin("sim-imaging-rt", {"seed": 3}, clock=clock)
    settings = make_settings(tmp_path, device_id="sim-imaging-rt", server_key_file=key)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin], clock=clock) as runtime:
        while not plugin.attached:
            await asyncio.sleep(0.01)
        plugin.inject_fault(ACQ_SERVICE_CRASH.code)
        await clock.advance(5.0)
        messages = [decode_uplink(e.topic, e.payload) for e in runtime.outbox.pending(1000)]
    [inventory] = [m for m in messages if isinstance(m, Inventory)]
    assert inventory.equipment.kind == "imaging"
    assert {f["code"] for f in inventory.config["faults"]} == {
        "ACQ_SERVICE_CRASH",
        "PACS_UNREACHABLE",
        "DETECTOR_CALIBRATION_DRIFT",
        "TUBE_OVERHEAT",
        "TUBE_FAILURE",
    }
    samples = {s.metric for m in messages if isinstance(m, Telemetry) for s in m.samples}
    assert "imaging.tube.arcing.per_1000" in samples
    raised = [m for m in messages if isinstance(m, Event) and m.event == "fault.raised"]
    assert [(m.code, m.data["effect"]) for m in raised] == [("ACQ_SERVICE_CRASH", "down")]
    changes = [m.data["to"] for m in messages if isinstance(m, Event) and m.event == "state.changed"]
    assert changes[-1] == "down"
