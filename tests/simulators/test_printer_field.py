"""The printer's hardware faults that only a field visit fixes (issue 15, item 7): a worn fuser
and a broken feed roller, when the options enable them; off by default (the printer as it was)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.plugin import fault_catalogue
from protocol import EquipmentState
from simulators.behaviours import fault_models
from simulators.printer import FEED_ROLLER_BROKEN, FUSER_WORN, PAPER_JAM, PrinterPlugin
from tests.simulators.support import T0, FakeClock, FakeContext, FakeSink


def printer(**options: Any) -> PrinterPlugin:
    options.setdefault("seed", 42)
    return PrinterPlugin("sim-printer-field", options, clock=FakeClock())


def state(plugin: PrinterPlugin) -> EquipmentState:
    return plugin.state  # read afresh (each call may differ)


def run_until(plugin: PrinterPlugin, sink: FakeSink, code: str, steps: int = 20_000) -> int:
    for step in range(steps):
        plugin.advance(30.0, sink)
        if code in plugin.book.active:
            return step
    raise AssertionError(f"{code} never happened")


def test_off_by_default_and_listed_in_the_catalogue_when_enabled() -> None:
    assert [spec.code for spec in fault_catalogue(printer())] == [PAPER_JAM.code]
    assert "printer.fuser.wear.percent" not in printer().read_metrics(T0)
    plugin = printer(fuser_life_pages=200_000, feed_roller_mtbf_pages=400_000)
    catalogue = fault_catalogue(plugin)
    assert [(spec.code, spec.effect) for spec in catalogue] == [
        (PAPER_JAM.code, "down"),
        (FUSER_WORN.code, "down"),
        (FEED_ROLLER_BROKEN.code, "down"),
    ]
    # the behaviours' runbook: field only — no remote action, no guide
    models = fault_models(plugin)
    for code in (FUSER_WORN.code, FEED_ROLLER_BROKEN.code):
        assert (models[code].field_only, models[code].remote_fixes, models[code].guided_fixes) == (
            True,
            (),
            (),
        )
        assert models[code].channel == "field"
    assert models[FUSER_WORN.code].wear is not None
    assert models[FUSER_WORN.code].wear.threshold == 200_000  # type: ignore[union-attr]
    assert models[FEED_ROLLER_BROKEN.code].mtbf == 400_000
    # a used machine: its fuser somewhere within the first 80 % of its drawn life
    life = plugin.book.lives[FUSER_WORN.code]
    assert 0.0 <= plugin.book.usage["fuser"] <= 0.8 * life
    assert plugin.read_metrics(T0)["printer.fuser.wear.percent"] == pytest.approx(
        100 * plugin.book.usage["fuser"] / 200_000, abs=1e-3
    )
    with pytest.raises(ValueError, match="fuser_life_pages"):
        printer(fuser_life_pages=0)


async def test_a_worn_fuser_stops_the_printer_until_an_engineer_replaces_it() -> None:
    plugin, sink = printer(pages_per_hour=2000.0, jam_rate_per_hour=0.0, fuser_life_pages=5000), FakeSink()
    run_until(plugin, sink, FUSER_WORN.code)
    [raised] = sink.named("fault.raised")
    assert (raised["code"], raised["data"]["effect"], raised["data"]["field_only"]) == (
        FUSER_WORN.code,
        "down",
        True,
    )
    assert raised["data"]["printer.fuser.pages"] > 0
    assert state(plugin) is EquipmentState.DOWN
    pages = plugin.pages_total
    for _ in range(100):  # down: no pages, and it does not clear by itself
        assert plugin.advance(30.0, sink) == 0
    assert (plugin.pages_total, state(plugin)) == (pages, EquipmentState.DOWN)
    status = next(a for a in plugin.actions() if a.name == "printer.status")
    shown = await status.handler({}, FakeContext(FakeClock()))
    assert (shown.data["state"], shown.data["fault"]["code"]) == ("down", FUSER_WORN.code)
    assert f"fault: {FUSER_WORN.code} since" in shown.output
    clear_jam = next(a for a in plugin.actions() if a.name == "printer.clear_jam")

    result = await clear_jam.handler({}, FakeContext(FakeClock()))
    assert not result.ok  # nothing remote fixes it
    selftest = await plugin.selftest(FakeContext(FakeClock()))
    assert not selftest.ok
    assert "fuser_unit" in selftest.output
    assert plugin.clear_fault(FUSER_WORN.code, cleared_by="field")  # the engineer's visit
    assert state(plugin) is EquipmentState.RUNNING
    assert plugin.read_metrics(T0)["printer.fuser.wear.percent"] == 0.0  # a new fuser
    cleared = sink.named("fault.cleared")[-1]
    assert (cleared["code"], cleared["data"]["cleared_by"]) == (FUSER_WORN.code, "field")


async def test_a_broken_feed_roller_is_down_until_repaired() -> None:
    plugin, sink = (
        printer(pages_per_hour=2000.0, jam_rate_per_hour=0.0, feed_roller_mtbf_pages=20_000),
        FakeSink(),
    )
    run_until(plugin, sink, FEED_ROLLER_BROKEN.code)
    assert state(plugin) is EquipmentState.DOWN
    assert plugin.inject_fault(PAPER_JAM.code, sink)  # a jam on top is its own fault
    clear_jam = next(a for a in plugin.actions() if a.name == "printer.clear_jam")
    cleared = await clear_jam.handler({}, FakeContext(FakeClock()))
    assert cleared.ok  # the jam is gone …
    assert (cleared.data["state"], cleared.data["still_active"]) == ("down", [FEED_ROLLER_BROKEN.code])
    assert "needs a field engineer" in cleared.output  # … the roller is not
    assert state(plugin) is EquipmentState.DOWN
    assert plugin.clear_fault(FEED_ROLLER_BROKEN.code, cleared_by="field")
    assert state(plugin) is EquipmentState.RUNNING
    assert plugin.inject_fault(FEED_ROLLER_BROKEN.code, sink)  # tests and demos can force it
    assert state(plugin) is EquipmentState.DOWN


def test_until_hardware_fails_the_seed_lives_the_same_jams() -> None:
    """The hardware faults draw from the fault book's streams, not the printer's."""

    def jams(**options: Any) -> list[tuple[str | None, str]]:
        plugin, sink = (
            printer(pages_per_hour=300.0, jam_rate_per_hour=1.0, jam_self_clear_minutes=5.0, **options),
            FakeSink(),
        )
        for _ in range(3000):
            plugin.advance(30.0, sink)
        return [(e["code"], e["detail"]) for e in sink.events if e["event"].startswith("fault.")]

    plain = jams()
    assert len(plain) > 20
    assert jams(fuser_life_pages=1e12, feed_roller_mtbf_pages=1e15) == plain
