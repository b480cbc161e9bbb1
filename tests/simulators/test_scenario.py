"""Scenarios: loading, validation naming the field, overrides, the fleet they build, the clock."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from simulators.chiller import ChillerPlugin
from simulators.clock import AnchoredClock, SteppedClock
from simulators.imaging import ImagingPlugin
from simulators.printer import PrinterPlugin
from simulators.run import RunError, build_members
from simulators.scenario import ScenarioError, load_scenario, shipped_scenarios

MINIMAL = """
[[customers]]
name = "Acme"
sites = [{ name = "Plant" }]

[[fleet]]
kind = "chiller"
count = 2
customer = "Acme"
site = "Plant"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_scenarios_load() -> None:
    names = shipped_scenarios()
    assert {"hospital-imaging", "office-printers", "plant-chillers", "tiny-hospital"} <= set(names)
    for name in names:
        scenario = load_scenario(name)
        assert scenario.name == name
        assert scenario.fleet
        assert scenario.customers


def test_a_minimal_file_gets_the_defaults(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, MINIMAL))
    assert scenario.name == "s"
    assert scenario.remote_maintenance is True
    assert scenario.technicians.pickup_for(1) < scenario.technicians.pickup_for(4)
    assert scenario.duration_s == scenario.days * 86400


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (MINIMAL.replace('kind = "chiller"', 'kind = "toaster"'), "fleet[0].kind"),
        (MINIMAL.replace('site = "Plant"\n', 'site = "Office"\n'), "fleet[0].site"),
        (MINIMAL.replace('customer = "Acme"', 'customer = "Nobody"'), "fleet[0].customer"),
        (MINIMAL.replace("count = 2", "count = 0"), "fleet[0].count"),
        (MINIMAL + "\n[technicians]\ncount = 0\n", "technicians.count"),
        (MINIMAL + "\n[customer_behaviour]\ncall_probability = 1.5\n", "customer_behaviour.call_probability"),
        (MINIMAL + "\nspeed = -1\n", "speed"),
        ('clock = "wall"\n' + MINIMAL, "clock"),
        ("tick_seconds = 0\n" + MINIMAL, "tick_seconds"),
        (MINIMAL + "\n[technicians]\nremote_minutes = -5\n", "technicians.remote_minutes"),
        ("bogus = 1\n" + MINIMAL, "bogus"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, change: str, field: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(field)):
        load_scenario(_write(tmp_path, change))


def test_unknown_names_and_broken_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="hospital-imaging"):
        load_scenario("no-such-scenario")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(_write(tmp_path, "[[customers]\n"))


def test_overrides_are_validated() -> None:
    scenario = load_scenario("tiny-hospital")
    faster = scenario.with_overrides(days=0.5, speed=50000, seed=None)
    assert (faster.days, faster.speed, faster.seed) == (0.5, 50000, scenario.seed)
    with pytest.raises(ScenarioError, match="days"):
        scenario.with_overrides(days=-1)


def test_the_clock_and_the_equipment_step_come_from_the_scenario(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, MINIMAL))
    assert scenario.clock == "anchored"
    assert scenario.tick == max(5.0, scenario.speed / 50)  # about 50 steps per real second
    stepped = scenario.with_overrides(clock="stepped")
    assert stepped.tick == 300.0
    assert stepped.with_overrides(tick_seconds=60).tick == 60.0
    members = build_members(
        stepped.with_overrides(tick_seconds=60), SteppedClock(datetime(2026, 1, 1, tzinfo=UTC))
    )
    assert {m.plugin.opts.tick_seconds for m in members} == {60.0}  # type: ignore[attr-defined]
    loaded = load_scenario(_write(tmp_path, 'clock = "stepped"\ntick_seconds = 120\n' + MINIMAL))
    assert (loaded.clock, loaded.tick) == ("stepped", 120.0)


def test_the_fleet_is_seeded_from_the_scenario() -> None:
    scenario = load_scenario("tiny-hospital")
    clock = AnchoredClock(1.0, datetime(2026, 1, 1, tzinfo=UTC))
    first, second = build_members(scenario, clock), build_members(scenario, clock)
    assert [m.device_id for m in first] == [m.device_id for m in second]
    kinds = {type(m.plugin) for m in first}
    assert kinds == {ImagingPlugin, ChillerPlugin}
    # same seed, same life: an hour of stepping raises the same faults on both builds
    for a, b in zip(first, second, strict=True):
        assert a.plugin.seed == b.plugin.seed  # type: ignore[attr-defined]
        for _ in range(200):
            a.plugin.advance(600.0)  # type: ignore[attr-defined]
            b.plugin.advance(600.0)  # type: ignore[attr-defined]
        assert a.plugin.book.raised == b.plugin.book.raised  # type: ignore[attr-defined]
    assert len({m.plugin.seed for m in first}) == len(first)  # type: ignore[attr-defined]
    assert all(m.allowed_actions for m in first)
    other = build_members(scenario.with_overrides(seed=scenario.seed + 1), clock)
    assert [m.plugin.seed for m in other] != [m.plugin.seed for m in first]  # type: ignore[attr-defined]


def test_fault_multipliers_reach_the_equipment(tmp_path: Path) -> None:
    text = MINIMAL + "\n[faults]\nmultiplier = 3.0\ncodes = { COMPRESSOR_TRIP = 2.0 }\n"
    scenario = load_scenario(_write(tmp_path, text))
    clock = AnchoredClock(1.0, datetime(2026, 1, 1, tzinfo=UTC))
    plugin = build_members(scenario, clock)[0].plugin
    assert plugin.book.multipliers["COMPRESSOR_TRIP"] == 6.0  # type: ignore[attr-defined]
    assert plugin.book.multipliers["SENSOR_DRIFT"] == 3.0  # type: ignore[attr-defined]
    bad = load_scenario(_write(tmp_path, MINIMAL + "\n[faults]\ncodes = { NO_SUCH_FAULT = 2.0 }\n"))
    with pytest.raises(RunError, match="NO_SUCH_FAULT"):
        build_members(bad, clock)


def test_printers_get_the_multiplier_on_their_jam_rate(tmp_path: Path) -> None:
    text = MINIMAL.replace('kind = "chiller"', 'kind = "printer"\noptions = { jam_rate_per_hour = 0.5 }')
    scenario = load_scenario(_write(tmp_path, text + "\n[faults]\nmultiplier = 4.0\n"))
    plugin = build_members(scenario, AnchoredClock(1.0, datetime(2026, 1, 1, tzinfo=UTC)))[0].plugin
    assert isinstance(plugin, PrinterPlugin)
    assert plugin.options.jam_rate_per_hour == 2.0


def test_anchored_clock_is_shared_through_the_wall_clock_and_rebases_continuously() -> None:
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    anchor = time.time()
    a, b = AnchoredClock(100.0, epoch, anchor), AnchoredClock(100.0, epoch, anchor)
    assert abs((a.now() - b.now()).total_seconds()) < 1.0  # two "processes", one time line
    before = a.now()
    a.rebase(10000.0)
    assert a.now() >= before
    assert a.speed == 10000.0
    started = time.monotonic()
    asyncio.run(a.sleep(100.0))  # 100 simulated seconds: 10 ms at 10000x
    assert time.monotonic() - started < 0.5
    with pytest.raises(ValueError, match="speed"):
        a.rebase(0)


def test_a_sleeper_notices_a_speed_change() -> None:
    clock = AnchoredClock(1.0, datetime(2026, 1, 1, tzinfo=UTC))

    async def main() -> float:
        started = time.monotonic()
        sleeper = asyncio.create_task(clock.sleep(3600.0))  # an hour at real speed …
        await asyncio.sleep(0.05)
        clock.rebase(1e6)  # … but the run accelerates
        await sleeper
        return time.monotonic() - started

    assert asyncio.run(main()) < 0.5
