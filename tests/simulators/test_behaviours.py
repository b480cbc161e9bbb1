"""Behaviour helpers that need no server: the runbook per device, claims, seeded decisions,
and the server's injectable clock."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from server import clock as server_clock
from server.db.types import utcnow
from server.errors import ConfigError
from server.settings import load_settings
from simulators.behaviours import (
    Claim,
    Person,
    World,
    claim_key,
    episode_detected,
    fault_models,
    guided_fix,
    incident_order,
    incident_tag,
)
from simulators.chiller import ChillerPlugin
from simulators.clock import EQUIPMENT, PEOPLE, AnchoredClock, SteppedClock
from simulators.printer import PAPER_JAM, PrinterPlugin


def _world(machines: dict[str, Any], seed: int = 1) -> World:
    client = httpx.AsyncClient()
    person = Person("desk", client, "t")
    return World(
        clock=AnchoredClock(1.0, datetime(2026, 1, 1, tzinfo=UTC)),
        remote_maintenance=True,
        desk=person,
        technicians=[person],
        customers={},
        machines=machines,
        approve_consent=lambda *_: None,
        guides={},
        seed=seed,
    )


def test_the_runbook_comes_from_the_fault_models() -> None:
    chiller = ChillerPlugin("c-1", {"seed": 1})
    models = fault_models(chiller)
    assert models["COMPRESSOR_TRIP"].remote_fixes
    assert models["BEARING_FAILURE"].field_only
    printer = PrinterPlugin("p-1", {"seed": 1})
    jam = fault_models(printer)[PAPER_JAM.code]
    assert [f.action for f in jam.remote_fixes] == ["printer.clear_jam"]
    assert jam.guided_fixes
    world = _world({"c-1": chiller})
    assert world.model_for("c-1", "SENSOR_DRIFT") is models["SENSOR_DRIFT"]
    assert world.model_for("c-1", None) is None
    assert world.model_for("nope", "SENSOR_DRIFT") is None


def test_a_guided_fix_clears_only_an_active_fault_and_is_seeded() -> None:
    outcomes = []
    for _ in range(2):
        chiller = ChillerPlugin("c-1", {"seed": 5})
        world = _world({"c-1": chiller})
        assert guided_fix(chiller, "COMPRESSOR_TRIP", 0, world.rng("x")) is False  # nothing active
        results = []
        for _ in range(20):
            chiller.inject_fault("COMPRESSOR_TRIP")
            results.append(guided_fix(chiller, "COMPRESSOR_TRIP", 0, world.rng("x")))
            chiller.clear_fault("COMPRESSOR_TRIP")
        outcomes.append(results)
    assert outcomes[0] == outcomes[1]
    assert any(outcomes[0])
    assert not all(outcomes[0])
    printer = PrinterPlugin("p-1", {"seed": 1})
    printer.inject_fault(PAPER_JAM.code)
    world = _world({"p-1": printer})
    tries = [guided_fix(printer, PAPER_JAM.code, 0, world.rng("p", i)) for i in range(30)]
    assert any(tries)
    assert printer.jam is None


def test_claims_are_per_episode_and_decisions_are_seeded() -> None:
    assert claim_key({"id": 4, "reopened": 0}) != claim_key({"id": 4, "reopened": 1})
    world = _world({})
    assert world.rng("a", 1).random() == world.rng("a", 1).random()
    assert world.rng("a", 1).random() != _world({}, seed=2).rng("a", 1).random()


def test_the_server_clock_follows_the_simulation_section() -> None:
    epoch = datetime(2030, 6, 1, tzinfo=UTC)
    settings = load_settings(
        None,
        mqtt={"enabled": False},
        simulation={"enabled": True, "epoch": epoch.isoformat(), "real_anchor": time.time(), "speed": 1000.0},
    )
    simulated = server_clock.from_settings(settings.simulation)
    assert simulated is not None
    try:
        server_clock.configure(simulated)
        now = utcnow()
        assert epoch <= now < epoch + timedelta(hours=2)
    finally:
        server_clock.configure(None)
    assert abs((utcnow() - datetime.now(UTC)).total_seconds()) < 5
    assert server_clock.from_settings(load_settings(None, mqtt={"enabled": False}).simulation) is None
    with pytest.raises(ConfigError, match="simulation"):
        load_settings(None, mqtt={"enabled": False}, simulation={"enabled": True})


def test_incidents_are_named_and_ordered_by_device_and_fault_time_not_by_id() -> None:
    a = {"id": 9, "device_id": "d-1", "t_fault": "2026-01-01T10:00:00Z", "t_detect": "x", "reopened": 0}
    b = {"id": 3, "device_id": "d-2", "t_fault": "2026-01-01T09:00:00Z", "t_detect": "x", "reopened": 1}
    renumbered = {**a, "id": 4}
    assert incident_tag(a) == incident_tag(renumbered) == "d-1@2026-01-01T10:00:00Z#0"
    assert incident_tag(b).endswith("#1")
    assert sorted([b, a], key=incident_order) == [a, b]


def test_claims_count_their_changes() -> None:
    world = _world({})
    before = world.claims.version
    world.claims[(1, 0)] = Claim("customer", 0.0)
    world.claims[(1, 0)] = Claim("desk", 0.0)
    assert world.claims.version == before + 2
    assert world.claims[(1, 0)].by == "desk"


async def test_people_sleep_in_their_own_phase_of_a_stepped_clock() -> None:
    clock = SteppedClock(datetime(2026, 1, 1, tzinfo=UTC))
    world = _world({})
    world.clock = clock
    assert world.stepped
    task = asyncio.create_task(world.sleep_sim(600.0), name="person")
    await clock.settle([task])
    assert clock.sleepers(PEOPLE) == 1
    assert clock.sleepers(EQUIPMENT) == 0
    clock.advance_to(clock.now() + timedelta(minutes=10))
    assert await clock.wake_due(PEOPLE) == 1
    await task
    settled: list[bool] = []

    async def settle() -> None:
        settled.append(True)

    world.settle = settle
    await world.settled(5.0)  # stepped: the runner's barrier, no real wait
    assert settled == [True]


def test_the_desk_waits_its_pickup_time_from_the_episode_it_works() -> None:
    """A reopened incident's t_detect is its first episode's: the desk's pickup wait runs from the
    latest episode's detection, not from days ago (issue 15)."""
    first = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    reopened = {
        "t_detect": first.isoformat(),
        "episodes": [
            {
                "start_s": first.timestamp() - 60,
                "detect_s": first.timestamp(),
                "end_s": first.timestamp() + 600,
            },
            {"start_s": first.timestamp() + 7200, "detect_s": first.timestamp() + 7260, "end_s": None},
        ],
    }
    assert episode_detected(reopened) == first.timestamp() + 7260
    assert episode_detected({"t_detect": first.isoformat(), "episodes": []}) == first.timestamp()
