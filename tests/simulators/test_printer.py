"""The simulated printer against a fake EventSink and a fake clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from agent.plugin import ActionResult, EquipmentPlugin, EventSink, FaultSpec, fault_catalogue
from agent.plugins import build_plugin
from protocol import EquipmentState, Severity
from simulators.printer import LOW_TONER_PERCENT, TONER_COLORS, PrinterPlugin
from tests.simulators.support import T0, FakeClock, FakeContext, FakeSink


def printer(clock: FakeClock | None = None, **options: Any) -> PrinterPlugin:
    options.setdefault("seed", 42)
    return PrinterPlugin("sim-printer-test", options, clock=clock or FakeClock())


async def run_action(plugin: PrinterPlugin, name: str, ctx: FakeContext) -> ActionResult:
    spec = next(a for a in plugin.actions() if a.name == name)
    return await spec.handler({}, ctx)


def test_printer_satisfies_the_plugin_protocols() -> None:
    plugin: EquipmentPlugin = printer()
    sink: EventSink = FakeSink()
    assert plugin.name == "sim-printer"
    assert isinstance(sink, FakeSink)


def test_equipment_info_is_a_printer_with_a_serial_derived_from_the_device_id() -> None:
    a1 = PrinterPlugin("sim-printer-a", {}).equipment_info()
    a2 = PrinterPlugin("sim-printer-a", {"seed": 9}).equipment_info()
    b = PrinterPlugin("sim-printer-b", {}).equipment_info()
    assert (a1.kind, a1.vendor, a1.model) == ("printer", "Simulated", "SimPrint 4000")
    assert a1.serial == a2.serial != b.serial
    assert a1.firmware


def test_metrics_cover_toner_pages_drum_fuser_and_jams() -> None:
    metrics = printer().read_metrics(T0)
    assert set(metrics) == {
        *(f"printer.toner.{c}.percent" for c in TONER_COLORS),
        "printer.pages.total",
        "printer.drum.wear.percent",
        "printer.fuser.temperature.celsius",
        "printer.jams.total",
    }
    assert all(isinstance(v, float) for v in metrics.values())


def test_random_jam_raises_fault_and_sets_state_down() -> None:
    plugin, sink = printer(jam_rate_per_hour=60.0, pages_per_hour=0.0), FakeSink()
    for _ in range(1000):
        plugin.advance(5.0, sink)
        if plugin.jam is not None:
            break
    assert plugin.jam is not None
    [raised] = sink.named("fault.raised")
    assert raised["code"] == "PAPER_JAM"
    assert raised["severity"] == Severity.ERROR
    assert raised["data"]["effect"] == "down"
    assert sink.states[-1][0] == EquipmentState.DOWN
    assert plugin.read_metrics(T0)["printer.jams.total"] == 1.0


def test_jammed_printer_prints_nothing_and_raises_no_second_jam() -> None:
    plugin, sink = printer(jam_rate_per_hour=1000.0, pages_per_hour=3600.0), FakeSink()
    assert plugin.inject_fault("PAPER_JAM", sink)
    pages = plugin.pages_total
    assert sum(plugin.advance(60.0, sink) for _ in range(10)) == 0
    assert plugin.pages_total == pages
    assert len(sink.named("fault.raised")) == 1
    assert not plugin.inject_fault("PAPER_JAM", sink)


async def test_clear_jam_clears_fault_and_returns_to_running() -> None:
    clock = FakeClock()
    plugin, sink = printer(clock), FakeSink()
    plugin.inject_fault("PAPER_JAM", sink)
    clock.current += timedelta(minutes=3)
    ctx = FakeContext(clock)

    result = await run_action(plugin, "printer.clear_jam", ctx)

    assert result.ok
    assert "cleared" in result.output
    assert result.data["down_seconds"] == 180.0
    [cleared] = sink.named("fault.cleared")
    assert cleared["code"] == "PAPER_JAM"
    assert cleared["data"]["cleared_by"] == "remote"
    assert cleared["data"]["command_id"] == ctx.command_id
    assert sink.states[-1][0] == EquipmentState.RUNNING
    assert plugin.jam is None
    assert ctx.progress_calls


async def test_clear_jam_without_a_jam_is_an_honest_failure() -> None:
    plugin, sink = printer(), FakeSink()
    plugin.advance(1.0, sink)
    result = await run_action(plugin, "printer.clear_jam", FakeContext(FakeClock()))
    assert not result.ok
    assert "No paper jam" in result.output
    assert result.data == {"state": "running", "jammed": False}
    assert sink.named("fault.cleared") == []
    assert sink.states == []


async def test_status_reports_the_active_fault() -> None:
    clock = FakeClock()
    plugin = printer(clock)
    ok = await run_action(plugin, "printer.status", FakeContext(clock))
    assert ok.ok
    assert ok.data["state"] == "running"
    assert ok.data["fault"] is None
    plugin.inject_fault("PAPER_JAM", FakeSink())
    jammed = await run_action(plugin, "printer.status", FakeContext(clock))
    assert jammed.data["state"] == "down"
    assert jammed.data["fault"]["code"] == "PAPER_JAM"
    assert "PAPER_JAM" in jammed.output


def test_printing_consumes_toner_and_wears_the_drum() -> None:
    plugin, sink = printer(pages_per_hour=600.0, jam_rate_per_hour=0.0), FakeSink()
    before = plugin.read_metrics(T0)
    printed = sum(plugin.advance(60.0, sink) for _ in range(60))
    after = plugin.read_metrics(T0)
    assert printed > 400
    assert after["printer.pages.total"] == before["printer.pages.total"] + printed
    for color in TONER_COLORS:
        assert after[f"printer.toner.{color}.percent"] < before[f"printer.toner.{color}.percent"]
    black_used = before["printer.toner.black.percent"] - after["printer.toner.black.percent"]
    assert black_used == pytest.approx(printed * 100 / 2500, abs=0.02)
    assert after["printer.drum.wear.percent"] > before["printer.drum.wear.percent"]


def test_fuser_sits_near_the_setpoint_while_printing_and_cools_when_idle() -> None:
    plugin, sink = printer(pages_per_hour=36000.0, jam_rate_per_hour=0.0), FakeSink()
    plugin.advance(5.0, sink)
    assert abs(plugin.fuser_celsius - 185.0) < 10
    idle = printer(pages_per_hour=0.0, jam_rate_per_hour=0.0)
    idle.fuser_celsius = 185.0
    for _ in range(10):
        idle.advance(60.0, sink)
    assert idle.fuser_celsius < 80


def test_toner_crossing_ten_percent_emits_consumable_low_once() -> None:
    plugin = printer(pages_per_hour=3600.0, jam_rate_per_hour=0.0, toner={"black": LOW_TONER_PERCENT + 0.5})
    sink = FakeSink()
    for _ in range(60):
        plugin.advance(10.0, sink)
    assert plugin.toner["black"] < LOW_TONER_PERCENT - 5
    low = [e for e in sink.named("consumable.low") if e["data"]["consumable"] == "toner.black"]
    assert len(low) == 1
    assert low[0]["severity"] == Severity.WARNING
    assert low[0]["data"]["percent"] < LOW_TONER_PERCENT


def test_same_seed_same_life() -> None:
    def life(seed: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
        plugin, sink = (
            printer(seed=seed, pages_per_hour=900.0, jam_rate_per_hour=2.0, jam_self_clear_minutes=10.0),
            FakeSink(),
        )
        for _ in range(2000):
            plugin.advance(30.0, sink)
        return sink.events, plugin.read_metrics(T0)

    events, metrics = life(7)
    assert life(7) == (events, metrics)
    assert life(8) != (events, metrics)
    assert {e["event"] for e in events} >= {"fault.raised", "fault.cleared"}


def test_customer_clears_jam_when_configured() -> None:
    plugin, sink = printer(jam_self_clear_minutes=5.0, pages_per_hour=0.0), FakeSink()
    plugin.inject_fault("PAPER_JAM", sink)
    for _ in range(24 * 60):
        plugin.advance(60.0, sink)
        if plugin.jam is None:
            break
    [cleared] = sink.named("fault.cleared")
    assert cleared["data"]["cleared_by"] == "customer"


def test_fault_catalogue_lists_every_fault_the_printer_can_raise() -> None:
    plugin, sink = printer(pages_per_hour=0.0), FakeSink()
    catalogue = fault_catalogue(plugin)  # the agent's own check: FaultSpecs, no repeated code
    assert catalogue == [
        FaultSpec(
            code="PAPER_JAM",
            meaning="Paper jam in the paper path: printing stopped",
            severity=Severity.ERROR,
            effect="down",
        )
    ]
    for spec in catalogue:  # each one can really be raised, with the catalogue's effect
        assert plugin.inject_fault(spec.code, sink)
        [raised] = sink.named("fault.raised")
        assert (raised["code"], raised["severity"], raised["data"]["effect"]) == (
            spec.code,
            spec.severity,
            spec.effect,
        )
        assert sink.states[-1][0] == EquipmentState(spec.effect)


def test_clear_fault_clears_an_active_jam_as_the_customer_would() -> None:
    plugin, sink = printer(pages_per_hour=0.0, jam_rate_per_hour=0.0), FakeSink()
    assert not plugin.attached
    assert plugin.clear_fault("PAPER_JAM", sink) is False  # nothing to clear
    assert plugin.attached
    assert plugin.inject_fault("PAPER_JAM")
    assert plugin.clear_fault("PAPER_JAM") is True
    assert plugin.jam is None
    assert plugin.state is EquipmentState.RUNNING
    [cleared] = sink.named("fault.cleared")
    assert (cleared["code"], cleared["data"]["cleared_by"]) == ("PAPER_JAM", "customer")
    assert sink.states[-1][0] is EquipmentState.RUNNING
    assert plugin.clear_fault("PAPER_JAM") is False
    with pytest.raises(ValueError, match="unknown fault code"):
        plugin.clear_fault("ON_FIRE")


def test_unknown_fault_and_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault code"):
        printer().inject_fault("ON_FIRE")
    with pytest.raises(ValueError, match="unknown printer option"):
        printer(pages_per_minute=3)
    with pytest.raises(ValueError, match="tick_seconds"):
        printer(tick_seconds=0)
    with pytest.raises(ValueError, match=r"toner\.black"):
        printer(toner={"black": 120})


async def test_run_reports_initial_state_and_advances_on_the_clock() -> None:
    clock = FakeClock()
    plugin, sink = printer(clock, tick_seconds=5.0, pages_per_hour=3600.0, jam_rate_per_hour=0.0), FakeSink()
    pages = plugin.pages_total
    task = asyncio.create_task(plugin.run(sink))
    async with asyncio.timeout(5):
        while len(clock.slept) < 20:
            await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.states[0] == (EquipmentState.RUNNING, "printer ready")
    assert set(clock.slept) == {5.0}
    assert plugin.pages_total > pages


def test_entry_point_builds_the_printer() -> None:
    plugin = build_plugin("sim-printer", "sim-printer-ep", {"seed": 1})
    assert isinstance(plugin, PrinterPlugin)
    assert plugin.device_id == "sim-printer-ep"


# -- selftest and the action specs -------------------------------------------------------------


def test_clear_jam_is_disruptive_and_status_is_not() -> None:
    specs = {spec.name: spec for spec in printer().actions()}
    assert specs["printer.clear_jam"].disruptive
    assert not specs["printer.status"].disruptive
    assert specs["printer.clear_jam"].args_schema == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }


async def test_selftest_passes_on_a_healthy_printer() -> None:
    clock = FakeClock()
    plugin = printer(clock, toner={"black": 80.0, "cyan": 80.0, "magenta": 80.0, "yellow": 80.0})
    plugin.drum_wear = 20.0
    result = await plugin.selftest(FakeContext(clock))
    assert result.ok, result.output
    assert {f["status"] for f in result.data["findings"]} == {"pass"}
    assert result.output.startswith("self-test passed")


async def test_selftest_fails_while_jammed_and_names_the_findings() -> None:
    clock = FakeClock()
    plugin, sink = printer(clock, toner={"black": 5.0}), FakeSink()
    plugin.drum_wear = 95.0
    plugin.inject_fault("PAPER_JAM", sink)
    result = await plugin.selftest(FakeContext(clock))
    assert not result.ok
    findings = {f["check"]: f for f in result.data["findings"]}
    assert findings["jam_sensor"]["status"] == "fail"
    assert plugin.jam is not None
    assert plugin.jam.location in findings["jam_sensor"]["detail"]
    assert findings["toner.black"]["status"] == "warn"
    assert findings["drum"]["status"] == "warn"
    assert "FAILED: jam_sensor" in result.output
    plugin.clear_fault("PAPER_JAM", sink)
    assert (await plugin.selftest(FakeContext(clock))).ok


async def test_selftest_fails_on_an_overheating_fuser_and_an_empty_cartridge() -> None:
    clock = FakeClock()
    plugin = printer(clock, toner={"cyan": 0.5})
    plugin.fuser_celsius = plugin.options.fuser_setpoint_celsius + 60
    result = await plugin.selftest(FakeContext(clock))
    failed = {f["check"] for f in result.data["findings"] if f["status"] == "fail"}
    assert not result.ok
    assert failed == {"fuser", "toner.cyan"}
