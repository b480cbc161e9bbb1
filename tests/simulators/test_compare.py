"""The ``sim compare`` table: MTRS per episode as the headline beside MTRS per incident, the
reopens and repeat failures, from each run's KPIs and incident list (simulators/compare.py).
The figures equal the server's KPIs of a real run: tests/integration/test_sim_run.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from simulators.compare import Comparison, reopens, repeats
from simulators.run import RunResult
from simulators.scenario import load_scenario

START = datetime(2026, 11, 30, tzinfo=UTC)
HOUR = 3600.0


def _result(kpis: dict[str, Any], incidents: list[dict[str, Any]]) -> RunResult:
    return RunResult(
        scenario=load_scenario("tiny-hospital"),
        start=START,
        end=START + timedelta(days=1),
        kpis=kpis,
        customers=[],
        dispatch_cost=400.0 * kpis.get("resolved_field", 0),
        incidents=incidents,
    )


REMOTE = _result(
    {"mtrs_episode_mean_s": 0.9 * HOUR, "mtrs_episode_n": 40, "mtrs_mean_s": 1.5 * HOUR, "incidents": 30,
     "resolved": 29, "resolved_field": 2, "self_resolution_rate": 27 / 29, "downtime_s": 36 * HOUR,
     "availability": 0.99},
    [{"reopened": 3, "repeat_of": None}, {"reopened": 0, "repeat_of": 1}, {"reopened": 1, "repeat_of": 1}],
)  # fmt: skip
BASELINE = _result(
    {"mtrs_episode_mean_s": 2.2 * HOUR, "mtrs_episode_n": 35, "mtrs_mean_s": None, "incidents": 28,
     "resolved": 20, "resolved_field": 12, "self_resolution_rate": 0.4, "downtime_s": 77 * HOUR,
     "availability": 0.97},
    [{"reopened": 2}, {"reopened": 0, "repeat_of": 7}],
)  # fmt: skip


def test_reopens_and_repeats_come_from_the_incident_list() -> None:
    assert (reopens(REMOTE), repeats(REMOTE)) == (4.0, 2.0)
    assert (reopens(BASELINE), repeats(BASELINE)) == (2.0, 1.0)


def test_mtrs_per_episode_is_the_headline_beside_mtrs_per_incident() -> None:
    comparison = Comparison(remote=REMOTE, baseline=BASELINE)
    rows = {row.label: row for row in comparison.rows()}
    episode, incident = rows["restore time per episode"], rows["MTRS (mean)"]
    assert (episode.shown, episode.remote, episode.baseline) == ("MTRS per episode (mean)", 0.9, 2.2)
    assert episode.difference == pytest.approx(-1.3)
    assert (incident.shown, incident.remote, incident.baseline, incident.difference) == (
        "MTRS per incident (mean)",
        1.5,
        None,
        None,
    )
    assert (rows["reopens"].remote, rows["repeat failures"].remote, rows["incidents"].remote) == (4, 2, 30)
    assert rows["episodes restored"].cells() == ("episodes restored", "40", "35", "+5")
    shown = [row.shown for row in comparison.rows()]
    assert shown.index("MTRS per episode (mean)") + 1 == shown.index("MTRS per incident (mean)")
    table = comparison.table()
    lines = table.splitlines()
    assert lines[5].startswith("MTRS per episode (mean)")  # title, header, rule, downtime, availability
    assert lines[5].split()[-6:] == ["0.9", "h", "2.2", "h", "-1.3", "h"]
    assert any(line.startswith("MTRS per incident (mean)") and line.rstrip().endswith("—") for line in lines)
    assert "restore time per episode" in lines[-1]  # the note says what each MTRS is
