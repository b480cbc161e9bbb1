"""The simulated chiller: against a fake sink and clock, and once under the real AgentRuntime."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import AgentRuntime
from agent.plugin import ActionResult, EquipmentPlugin
from protocol import EquipmentState, Event, Inventory, decode_uplink
from simulators.chiller import (
    BEARING_FAILURE,
    COMPRESSOR_TRIP,
    HIGH_HEAD_PRESSURE,
    LOW_REFRIGERANT,
    SENSOR_DRIFT,
    VIBRATION_WARN_MM_S,
    ChillerPlugin,
)
from tests.agent.support import ManualClock, make_settings, write_public_key
from tests.simulators.support import T0, FakeClock, FakeContext, FakeSink, within


def chiller(clock: FakeClock | None = None, **options: Any) -> ChillerPlugin:
    options.setdefault("seed", 42)
    return ChillerPlugin("sim-chiller-test", options, clock=clock or FakeClock())


async def act(plugin: ChillerPlugin, name: str, **args: Any) -> ActionResult:
    spec = next(a for a in plugin.actions() if a.name == name)
    return await spec.handler(args, FakeContext(FakeClock()))


def test_chiller_is_an_equipment_plugin_with_its_metrics() -> None:
    plugin: EquipmentPlugin = chiller()
    assert (plugin.name, plugin.equipment_info().kind) == ("sim-chiller", "chiller")
    metrics = plugin.read_metrics(T0)
    assert {
        "chiller.supply.temperature.celsius",
        "chiller.return.temperature.celsius",
        "chiller.compressor.pressure.bar",
        "chiller.compressor.vibration.mm_s",
        "chiller.bearing.wear.percent",
        "chiller.refrigerant.level.percent",
    } <= set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_random_faults_strike_at_the_catalogue_rates() -> None:
    plugin, sink = chiller(fault_rate_multiplier=20.0, fault_rates={"BEARING_FAILURE": 0.0}), FakeSink()
    start = plugin.run_hours
    for _ in range(6 * 4000):
        plugin.advance(600.0, sink)
        if plugin.book.active:
            plugin.field_service()
    hours = plugin.run_hours - start  # compressor running hours: the operating hours
    for fault in (COMPRESSOR_TRIP, HIGH_HEAD_PRESSURE, SENSOR_DRIFT, LOW_REFRIGERANT):
        assert fault.mtbf is not None
        expected = hours * 20.0 / fault.mtbf
        assert within(plugin.book.raised[fault.code], expected, math.sqrt(expected)), fault.code


def test_vibration_rises_as_the_bearing_wears_then_it_fails_and_needs_a_field_visit() -> None:
    plugin, sink = chiller(bearing_hours=0, fault_rates={"BEARING_FAILURE": 400.0}), FakeSink()
    for fault in (COMPRESSOR_TRIP, HIGH_HEAD_PRESSURE, SENSOR_DRIFT, LOW_REFRIGERANT):
        plugin.book.multipliers[fault.code] = 0.0
    vibration: list[float] = []
    while BEARING_FAILURE.code not in plugin.book.active:
        plugin.advance(600.0, sink)
        vibration.append(plugin.read_metrics(T0)["chiller.compressor.vibration.mm_s"])
        assert len(vibration) < 10_000
    before = vibration[:-1]
    assert max(before[: len(before) // 2]) < VIBRATION_WARN_MM_S <= before[-1]
    assert plugin.state is EquipmentState.DOWN
    assert not plugin.compressor_running
    assert plugin.read_metrics(T0)["chiller.compressor.vibration.mm_s"] < 0.5  # stopped
    assert plugin.field_service(sink) == [BEARING_FAILURE.code]
    assert plugin.bearing_replacements == 1
    plugin.advance(600.0, sink)
    assert plugin.read_metrics(T0)["chiller.compressor.vibration.mm_s"] < 3.0


@pytest.mark.parametrize("fault", [COMPRESSOR_TRIP, HIGH_HEAD_PRESSURE], ids=lambda f: f.code)
async def test_reset_compressor_clears_its_faults_with_the_catalogue_probability(fault: Any) -> None:
    plugin, sink = chiller(), FakeSink()
    n, fixed = 400, 0
    for _ in range(n):
        plugin.inject_fault(fault.code, sink)
        result = await act(plugin, "chiller.reset_compressor")
        fixed += result.ok
        plugin.book.clear(fault.code, cleared_by="field")
    p = fault.remote_probability("chiller.reset_compressor")
    assert within(fixed, n * p, math.sqrt(n * p * (1 - p)))


def test_tripped_compressor_often_restarts_by_itself() -> None:
    plugin, sink = chiller(fault_rate_multiplier=0.0), FakeSink()
    n, by_itself = 300, 0
    for _ in range(n):
        plugin.inject_fault(COMPRESSOR_TRIP.code, sink)
        for _ in range(24):  # two hours in 5-minute steps
            plugin.advance(300.0, sink)
            if COMPRESSOR_TRIP.code not in plugin.book.active:
                by_itself += 1
                break
        plugin.book.clear(COMPRESSOR_TRIP.code, cleared_by="field")
    p = COMPRESSOR_TRIP.self_clear_probability
    assert within(by_itself, n * p, math.sqrt(n * p * (1 - p)))
    assert plugin.starts > 0


async def test_sensor_drift_moves_the_reading_and_recalibration_fixes_it() -> None:
    plugin, sink = chiller(fault_rate_multiplier=0.0), FakeSink()
    plugin.book.multipliers[SENSOR_DRIFT.code] = 1e6
    plugin.advance(600.0, sink)
    assert SENSOR_DRIFT.code in plugin.book.active
    assert plugin.state is EquipmentState.DEGRADED
    plugin.book.multipliers[SENSOR_DRIFT.code] = 0.0
    for _ in range(12):
        plugin.advance(600.0, sink)
    reading = plugin.read_metrics(T0)["chiller.supply.temperature.celsius"]
    assert abs(reading - plugin.options.setpoint_celsius) < 0.5  # the controller trusts the sensor
    assert abs(plugin.supply_celsius - plugin.options.setpoint_celsius) > 1.0  # the water is off
    while SENSOR_DRIFT.code in plugin.book.active:
        await act(plugin, "chiller.recalibrate_sensors", sensor="supply")
    for _ in range(12):
        plugin.advance(600.0, sink)
    assert abs(plugin.supply_celsius - plugin.options.setpoint_celsius) < 0.5


def test_low_refrigerant_degrades_and_only_a_field_visit_recharges() -> None:
    plugin, sink = chiller(fault_rate_multiplier=0.0), FakeSink()
    plugin.book.multipliers[LOW_REFRIGERANT.code] = 1e6
    plugin.advance(600.0, sink)
    assert plugin.state is EquipmentState.DEGRADED
    assert plugin.refrigerant <= 80.0
    assert not any(LOW_REFRIGERANT.remote_probability(a.name) for a in plugin.actions())
    assert not plugin.attempt_guided_fix(LOW_REFRIGERANT.code, sink=sink)
    plugin.book.multipliers[LOW_REFRIGERANT.code] = 0.0
    assert plugin.field_service(sink) == [LOW_REFRIGERANT.code]
    assert plugin.refrigerant == 100.0
    assert plugin.state is EquipmentState.RUNNING


async def test_selftest_findings_follow_the_machine() -> None:
    clock = FakeClock()
    plugin, sink = chiller(clock, bearing_hours=0, refrigerant_percent=99.0), FakeSink()
    healthy = await plugin.selftest(FakeContext(clock))
    assert healthy.ok, healthy.output
    assert {f["check"] for f in healthy.data["findings"]} == {
        "compressor",
        "head_pressure",
        "vibration",
        "refrigerant",
        "sensors",
    }
    plugin.inject_fault(HIGH_HEAD_PRESSURE.code, sink)
    plugin.advance(5.0, sink)
    broken = await plugin.selftest(FakeContext(clock))
    failed = {f["check"] for f in broken.data["findings"] if f["status"] == "fail"}
    assert failed == {"compressor", "head_pressure"}


def test_actions_are_flagged_disruptive_where_they_change_the_machine() -> None:
    specs = {spec.name: spec for spec in chiller().actions()}
    assert {n for n, s in specs.items() if s.disruptive} == {
        "chiller.reset_compressor",
        "chiller.recalibrate_sensors",
    }
    assert not specs["chiller.status"].disruptive


def test_same_seed_same_life() -> None:
    def life(seed: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
        plugin, sink = chiller(seed=seed, fault_rate_multiplier=30.0), FakeSink()
        for step in range(3000):
            plugin.advance(600.0, sink)
            if step % 20 == 0:
                plugin.field_service(sink)
        return sink.events, plugin.read_metrics(T0)

    first = life(7)
    assert life(7) == first
    assert life(8) != first
    assert len(first[0]) > 20


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown chiller option"):
        chiller(speed=3)
    with pytest.raises(ValueError, match="refrigerant_percent"):
        chiller(refrigerant_percent=120)
    with pytest.raises(ValueError, match="setpoint_celsius"):
        chiller(setpoint_celsius="cold")
    with pytest.raises(ValueError, match="unknown part"):
        chiller().replace_part("flux capacitor")


async def test_runs_under_the_real_agent_runtime(tmp_path: Path) -> None:
    key = write_public_key(Ed25519PrivateKey.generate(), tmp_path / "server.pub")
    clock = ManualClock()
    plugin = ChillerPlugin("sim-chiller-rt", {"seed": 3}, clock=clock)
    settings = make_settings(tmp_path, device_id="sim-chiller-rt", server_key_file=key)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin], clock=clock) as runtime:
        while not plugin.attached:
            await asyncio.sleep(0.01)
        plugin.inject_fault(BEARING_FAILURE.code)
        await clock.advance(5.0)
        messages = [decode_uplink(e.topic, e.payload) for e in runtime.outbox.pending(1000)]
    [inventory] = [m for m in messages if isinstance(m, Inventory)]
    assert inventory.equipment.kind == "chiller"
    faults = {f["code"]: f["effect"] for f in inventory.config["faults"]}
    assert faults == {
        "COMPRESSOR_TRIP": "down",
        "HIGH_HEAD_PRESSURE": "down",
        "SENSOR_DRIFT": "degraded",
        "LOW_REFRIGERANT": "degraded",
        "BEARING_FAILURE": "down",
    }
    raised = [m for m in messages if isinstance(m, Event) and m.event == "fault.raised"]
    assert [(m.code, m.severity.value) for m in raised] == [("BEARING_FAILURE", "critical")]
    changes = [m.data["to"] for m in messages if isinstance(m, Event) and m.event == "state.changed"]
    assert changes[-1] == "down"
