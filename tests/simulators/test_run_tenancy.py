"""A simulated run of two hospitals that both have a "Radiology" (real embedded broker, real
server, stepped clock): every device ends up with its own hospital's site, for the whole
simulated period, and the KPIs count each hospital's devices to it (issue 13: six devices of
the 30-day hospital run were counted under the wrong customer)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from simulators.run import RunResult, run_scenario
from simulators.scenario import Scenario, load_scenario

pytestmark = pytest.mark.timeout(180)

TWO_HOSPITALS = """
description = "two hospitals, one site name"
days = 0.02
seed = 3
telemetry_minutes = 30
clock = "stepped"
start = 2026-03-02T00:00:00Z

[[customers]]
name = "St Mary Hospital"
sites = [{ name = "Radiology" }]

[[customers]]
name = "Riverside Clinic"
sites = [{ name = "Radiology" }]

[[fleet]]
kind = "chiller"
count = 2
customer = "St Mary Hospital"
site = "Radiology"
prefix = "stmary-rad"

[[fleet]]
kind = "chiller"
count = 3
customer = "Riverside Clinic"
site = "Radiology"
prefix = "riverside-rad"

[faults]
multiplier = 0.0

[technicians]
count = 1
"""


def _scenario(tmp_path: Path) -> Scenario:
    path = tmp_path / "two-hospitals.toml"
    path.write_text(TWO_HOSPITALS)
    return load_scenario(str(path))


def test_same_named_sites_of_two_customers_get_their_own_devices(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path)
    workdir = tmp_path / "run"
    result: RunResult = asyncio.run(run_scenario(scenario, workdir))
    assert not result.errors, result.errors
    with sqlite3.connect(workdir / "sim.db") as db:
        names = dict(db.execute("SELECT id, name FROM customers"))
        owners = {
            device: names[customer] for device, customer in db.execute("SELECT id, customer_id FROM devices")
        }
        periods = list(
            db.execute(
                "SELECT device_id, customer_id, valid_from_s FROM device_assignments "
                "WHERE customer_id IS NOT NULL"
            )
        )
    expected = {
        **{f"stmary-rad-{i:04d}": "St Mary Hospital" for i in range(1, 3)},
        **{f"riverside-rad-{i:04d}": "Riverside Clinic" for i in range(1, 4)},
    }
    assert set(owners) == set(expected), owners
    assert owners == expected
    # one period per device, its own customer, begun before the simulated period: nothing moved
    assert sorted((device, names[customer]) for device, customer, _ in periods) == sorted(expected.items())
    start = result.start.astimezone(UTC).timestamp()
    assert all(valid_from <= start for _, _, valid_from in periods), (periods, result.start)
    assert all(valid_from > datetime(2000, 1, 1, tzinfo=UTC).timestamp() for _, _, valid_from in periods)
    # no "(no customer)" row: no device was unassigned during the period either
    counted = {row["group"]["label"]: row["kpis"]["devices"] for row in result.customers}
    assert counted == {"St Mary Hospital": 2, "Riverside Clinic": 3}
