"""Accelerated scenario runs against the real embedded broker and the real server (issue 5).

One module-scoped comparison of the shipped ``tiny-hospital`` scenario (remote maintenance on,
then off, same seed) plus one more remote run for determinism; every fault episode is its own
incident here (``reopen_window_days = 0``) so each incident's channel can be checked against how
the equipment says its fault cleared.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from server.db.models import Role
from simulators.compare import Comparison, compare_scenario
from simulators.run import RunResult, run_scenario
from simulators.scenario import load_scenario
from tests.support.server import api_client, bearer, create_token, server_settings

pytestmark = pytest.mark.timeout(240)

EXPECTED_CHANNEL = {"self": "auto", "remote": "remote", "customer": "customer", "field": "field"}
ONE_INCIDENT_PER_FAULT = {"incidents": {"reopen_window_days": 0}}


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim-run")


@pytest.fixture(scope="module")
def comparison(tmp_module: Path) -> Comparison:
    scenario = load_scenario("tiny-hospital")
    return asyncio.run(
        compare_scenario(scenario, tmp_module / "compare", server_overrides=ONE_INCIDENT_PER_FAULT)
    )


@pytest.fixture(scope="module")
def rerun(tmp_module: Path) -> RunResult:
    scenario = load_scenario("tiny-hospital")
    return asyncio.run(run_scenario(scenario, tmp_module / "rerun", server_overrides=ONE_INCIDENT_PER_FAULT))


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _how_cleared(result: RunResult, incident: dict[str, Any]) -> str | None:
    """``cleared_by`` of the device's clear of the incident's fault that restored it."""
    restored = _ts(incident["t_restored"])
    candidates = [
        c
        for c in result.clears
        if c["device_id"] == incident["device_id"]
        and c["code"] == incident["fault_code"]
        and _ts(c["ts"]) <= restored + 1
    ]
    return max(candidates, key=lambda c: _ts(c["ts"]))["cleared_by"] if candidates else None


def test_each_fault_kind_resolves_through_its_channel(comparison: Comparison) -> None:
    result = comparison.remote
    assert not result.errors, result.errors
    checked: dict[str, int] = {}
    for incident in result.incidents:
        if (
            incident["status"] not in ("resolved", "closed")
            or len(incident["codes"]) != 1
            or not incident["t_restored"]
        ):
            continue
        cleared_by = _how_cleared(result, incident)
        if cleared_by is None or (incident["resolved_by"] not in (None, "server") and cleared_by == "self"):
            continue  # cleared while an engineer travelled: resolved auto by a person (checked below)
        expected = EXPECTED_CHANNEL[cleared_by]
        if cleared_by == "field" and not (incident["visits"] or incident["t_onsite"]):
            expected = "auto"  # repaired on a visit for another incident of the device: nobody acted on it
        assert incident["channel"] == expected, (incident, cleared_by)
        checked[incident["channel"]] = checked.get(incident["channel"], 0) + 1
    # self-clearing → auto, remote-fixable → remote, customer-fixable → customer, field-only → field
    assert set(checked) == {"auto", "remote", "customer", "field"}, checked


def test_baseline_dispatches_every_incident_that_does_not_clear_by_itself(comparison: Comparison) -> None:
    base = comparison.baseline
    assert not base.errors, base.errors
    channels = {i["channel"] for i in base.incidents if i["status"] in ("resolved", "closed")}
    assert channels <= {"auto", "field"}, channels
    assert base.actions["remote.session"] == 0
    assert base.actions["customer.guide_run"] == 0
    assert base.kpis["resolved_field"] >= 1


def _untouched(result: RunResult, device: str) -> list[str]:
    """The device's fault codes raised before any person acted on it (first ``t_ack``): from
    then on people's real-time reactions feed back into the equipment (a machine that is down
    accrues no operating hours), so only this part is reproducible to the event."""
    acted = [_ts(i["t_ack"]) for i in result.incidents if i["device_id"] == device and i["t_ack"]]
    first = min(acted, default=float("inf"))
    return [code for ts, code in result.fault_history[device] if _ts(ts) < first]


def test_same_scenario_and_seed_give_the_same_fault_history(comparison: Comparison, rerun: RunResult) -> None:
    runs = (comparison.remote, rerun, comparison.baseline)
    assert set(runs[0].fault_history) == set(runs[1].fault_history) == set(runs[2].fault_history)
    compared = 0
    for device in runs[0].fault_history:
        histories = [_untouched(run, device) for run in runs]
        n = min(len(h) for h in histories)
        # the same faults arrive in the same order whatever the people later do
        assert histories[0][:n] == histories[1][:n] == histories[2][:n], (device, histories)
        compared += n
    assert compared >= 4, "too few faults before the first intervention to compare"


async def _kpis_from_database(result: RunResult, db: Path, tmp: Path) -> dict[str, Any]:
    settings = server_settings(f"sqlite+aiosqlite:///{db}")
    async with api_client(settings) as (client, runtime):
        token = await create_token(runtime, "auditor", Role.OPS)
        params = {
            "from": result.start.isoformat(),
            "to": result.end.isoformat(),
            "as_of": result.end.isoformat(),
        }
        response = await client.get("/api/v1/kpis", params=params, headers=bearer(token))
        assert response.status_code == 200, response.text
        row: dict[str, Any] = response.json()["rows"][0]["kpis"]
        return row


def test_compare_figures_are_the_servers_kpis(comparison: Comparison, tmp_module: Path) -> None:
    for label, result in (("remote", comparison.remote), ("baseline", comparison.baseline)):
        kpis = asyncio.run(_kpis_from_database(result, tmp_module / "compare" / label / "sim.db", tmp_module))
        rows = {row.label: row for row in comparison.rows()}
        pick = (lambda row: row.remote) if label == "remote" else (lambda row: row.baseline)
        assert pick(rows["downtime"]) == pytest.approx(kpis["downtime_s"] / 3600)
        assert pick(rows["availability"]) == pytest.approx(kpis["availability"])
        assert pick(rows["self-resolution rate"]) == pytest.approx(kpis["self_resolution_rate"])
        assert pick(rows["dispatches"]) == kpis["resolved_field"]
        assert pick(rows["dispatch cost"]) == pytest.approx(kpis["resolved_field"] * 400.0)
        mtrs = kpis["mtrs_mean_s"]
        assert pick(rows["MTRS (mean)"]) == (None if mtrs is None else pytest.approx(mtrs / 3600))
    table = comparison.table()
    assert "remote maintenance" in table
    assert "baseline" in table
    assert "dispatch cost" in table
