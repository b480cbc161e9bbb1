"""Accelerated scenario runs against the real embedded broker and the real server (issue 5).

One module-scoped comparison of the shipped ``tiny-hospital`` scenario on the stepped clock
(remote maintenance on, then off, same seed: reproducible, so every assertion below has one fixed
outcome) plus a rerun with the same seed and a run with another seed for whole-run
determinism; every fault episode is its own incident here
(``reopen_window_days = 0``) so each incident's channel can be checked against how the equipment
says its fault cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from server.db.models import Role
from simulators.compare import Comparison, compare_scenario
from simulators.run import RunResult, run_scenario
from simulators.scenario import Scenario, load_scenario
from tests.support.server import api_client, bearer, create_token, server_settings

pytestmark = pytest.mark.timeout(240)

EXPECTED_CHANNEL = {"self": "auto", "remote": "remote", "customer": "customer", "field": "field"}
ONE_INCIDENT_PER_FAULT = {"incidents": {"reopen_window_days": 0}}


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim-run")


STEPPED_DAYS = 1.0  # every channel shows up in a day of tiny-hospital
START = datetime(2026, 3, 2, tzinfo=UTC)


def _scenario(seed: int | None = None) -> Scenario:
    """tiny-hospital on the stepped clock: the runs below are reproducible, so are these tests."""
    return load_scenario("tiny-hospital").with_overrides(
        clock="stepped", days=STEPPED_DAYS, start=START, seed=seed
    )


@pytest.fixture(scope="module")
def comparison(tmp_module: Path) -> Comparison:
    return asyncio.run(
        compare_scenario(_scenario(), tmp_module / "compare", server_overrides=ONE_INCIDENT_PER_FAULT)
    )


@pytest.fixture(scope="module")
def stepped_runs(tmp_module: Path, comparison: Comparison) -> tuple[RunResult, RunResult, RunResult]:
    """The comparison's remote run, a rerun with the same seed, and a run with another seed."""

    def run(label: str, seed: int | None) -> RunResult:
        return asyncio.run(
            run_scenario(_scenario(seed), tmp_module / label, server_overrides=ONE_INCIDENT_PER_FAULT)
        )

    return comparison.remote, run("rerun", None), run("other-seed", _scenario().seed + 1)


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


_INCIDENT_FIELDS = (
    "device_id", "kind", "status", "channel", "fault_code", "codes", "effect", "severity", "priority",
    "reopened", "t_fault", "t_detect", "t_ack", "t_respond", "t_onsite", "t_restored", "t_resolved",
    "t_closed", "visits", "remote_used", "needs_dispatch", "resolution", "cause", "episodes",
)  # fmt: skip


def _history(result: RunResult) -> dict[str, Any]:
    """Everything a run leaves that must be reproducible: every device event with its device
    timestamp and every incident with its timestamps and channel (ids left out: the server
    numbers incidents in the arrival order of messages from different devices)."""
    incidents = sorted(
        ({k: i[k] for k in _INCIDENT_FIELDS} for i in result.incidents),
        key=lambda i: (i["device_id"], i["t_fault"] or "", i["reopened"]),
    )
    return {
        "faults": result.fault_history,
        "clears": result.clears,
        "incidents": incidents,
        "kpis": result.kpis,
        "actions": dict(result.actions),
    }


_SERVER_IDS = re.compile(r"\bses_[A-Za-z0-9_-]{8,}|(?<=\"command_id\": \")[A-Za-z0-9_-]{8,}")


def _stored(workdir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """A run's messages and events as stored by its server; the random ids the server gives
    sessions and commands become their order of first appearance (``<id 3>``)."""
    ids: dict[str, str] = {}

    def same_ids(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            _SERVER_IDS.sub(lambda m: ids.setdefault(m.group(0), f"<id {len(ids)}>"), v)
            if isinstance(v, str)
            else v
            for v in row
        )

    with contextlib.closing(sqlite3.connect(workdir / "sim.db")) as db:
        return {
            "messages": db.execute(
                "SELECT device_id, seq, kind, ts, received_at FROM messages ORDER BY device_id, seq"
            ).fetchall(),
            "events": [
                same_ids(row)
                for row in db.execute(
                    "SELECT device_id, seq, type, code, severity, ts, received_at, detail, data FROM events "
                    "ORDER BY device_id, seq"
                )
            ],
        }


def test_a_stepped_run_is_reproducible_as_a_whole(
    stepped_runs: tuple[RunResult, RunResult, RunResult], tmp_module: Path
) -> None:
    first, second, other = stepped_runs
    for run in stepped_runs:
        assert not run.errors, run.errors
    # people acted, so the equipment's history depends on them (it is not just the seeded faults)
    assert first.actions["customer.guide_run"] >= 1, first.actions
    assert first.actions["remote.session"] >= 1, first.actions
    channels = {i["channel"] for i in first.incidents if i["channel"]}
    assert len(channels) >= 3, channels
    a, b = _history(first), _history(second)
    for part in a:
        assert a[part] == b[part], part
    assert (first.start, first.end) == (second.start, second.end)
    # and in the databases: every message (device seq, kind, device time, server receipt time) and
    # every event with its data, bit for bit
    first_db, second_db = _stored(tmp_module / "compare" / "remote"), _stored(tmp_module / "rerun")
    assert first_db["messages"], "no messages stored"
    for table in first_db:
        assert first_db[table] == second_db[table], table
    # another seed: another history (so the comparison above can fail)
    assert _history(other)["faults"] != a["faults"]
    assert _history(other)["incidents"] != a["incidents"]


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
    for label, result in (("remote", comparison.remote), ("baseline", comparison.baseline)):
        pick = (lambda row: row.remote) if label == "remote" else (lambda row: row.baseline)
        ends = [
            (e["end_s"] - e["start_s"]) / 3600
            for i in result.incidents
            for e in i["episodes"]
            if e["end_s"] is not None and result.start.timestamp() <= e["end_s"] < result.end.timestamp()
        ]
        assert ends, label
        assert pick(rows["restore time per episode"]) == pytest.approx(sum(ends) / len(ends))
        assert pick(rows["reopens"]) == sum(i["reopened"] for i in result.incidents)
    table = comparison.table()
    assert "remote maintenance" in table
    assert "baseline" in table
    assert "dispatch cost" in table
    assert "restore time per episode" in table


def test_the_anchored_clock_still_runs_a_scenario(tmp_module: Path) -> None:
    """The wall-clock-anchored mode (not reproducible, but faster for small fleets) still runs
    everything: people act, incidents resolve, the KPIs cover the run's period."""
    # two simulated days: at the scenario's speed (20,000x) about 9 s of wall clock, so that on a
    # loaded machine the people still get their turns (half a day, 2 s, once left them none)
    scenario = load_scenario("tiny-hospital").with_overrides(days=2.0)
    assert scenario.clock == "anchored"
    result = asyncio.run(
        run_scenario(scenario, tmp_module / "anchored", server_overrides=ONE_INCIDENT_PER_FAULT)
    )
    assert not result.errors, result.errors
    assert (result.end - result.start).total_seconds() == pytest.approx(2.0 * 86400)
    assert result.kpis["resolved"] >= 1
    assert sum(result.actions.values()) >= 1
