"""``fleetcare sim compare``: the same scenario and seed with remote maintenance on and off.

Fault arrivals draw from their own seeded stream, so both runs see the same faults; only what
people do differs. The baseline (remote maintenance off) is the policy of dispatching a field
engineer for every incident that does not clear by itself. The table is the before/after a
service organisation reports; every figure comes from the server's ``/api/v1/kpis`` of each run
(dispatch cost: ``resolved_field`` x the customer's ``cost_per_dispatch``), except the reopens
and repeat failures, counted from each run's incident list.

The two restore rows (docs/kpis.md, "MTRS per episode"): **MTRS per episode** — the headline —
is the mean outage: restore - fault of every failure episode restored in the run.
**MTRS per incident** is, per resolved incident, ``t_restored - t_fault``: for an incident a
recurrence reopened (within ``incidents.reopen_window_hours`` of its restore, default 24 h),
from the first episode's fault to the last one's restore, the hours the equipment ran between
them included. A recurrence later than that is a new incident, a **repeat failure** of the
earlier one. (Before issue 15 an incident reopened for 30 days after its resolution, and MTRS
per incident came out in weeks: docs/simulators.md, "Reading the compare table".)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simulators.run import Progress, RunResult, run_scenario
from simulators.scenario import Scenario

__all__ = ["Comparison", "Row", "compare_scenario", "reopens", "repeats"]


@dataclass(frozen=True, slots=True)
class Row:
    label: str  # the row's name for programs (tests look rows up by it)
    remote: float | None
    baseline: float | None
    fmt: str  # "hours", "pct", "count", "money"
    title: str = ""  # what the table prints, when it says more than the label

    @property
    def shown(self) -> str:
        return self.title or self.label

    @property
    def difference(self) -> float | None:
        if self.remote is None or self.baseline is None:
            return None
        return self.remote - self.baseline

    def cells(self) -> tuple[str, str, str, str]:
        return (
            self.shown,
            _fmt(self.remote, self.fmt),
            _fmt(self.baseline, self.fmt),
            _fmt(self.difference, self.fmt, sign=True),
        )


def _fmt(value: float | None, fmt: str, *, sign: bool = False) -> str:
    if value is None:
        return "—"
    plus = "+" if sign else ""
    if fmt == "hours":
        return f"{value:{plus},.1f} h"
    if fmt == "pct":
        return f"{100 * value:{plus}.1f} %" if not sign else f"{100 * value:{plus}.1f} pt"
    if fmt == "money":
        return f"{value:{plus},.2f}"
    return f"{value:{plus},.0f}"


def reopens(result: RunResult) -> float:
    """How many times a fault came back within the reopen window and reopened (or re-joined,
    while still open) an earlier incident."""
    return float(sum(int(i.get("reopened") or 0) for i in result.incidents))


def repeats(result: RunResult) -> float:
    """Incidents that are a repeat failure of an earlier one (``repeat_of``: the fault came back
    later than the reopen window, within 30 days of the restore)."""
    return float(sum(1 for i in result.incidents if i.get("repeat_of") is not None))


def _kpi(result: RunResult, name: str, scale: float = 1.0) -> float | None:
    value = result.kpis.get(name)
    return None if value is None else float(value) * scale


@dataclass(frozen=True, slots=True)
class Comparison:
    remote: RunResult
    baseline: RunResult

    def rows(self) -> list[Row]:
        r, b = self.remote, self.baseline

        def kpi(name: str, scale: float = 1.0) -> tuple[float | None, float | None]:
            return _kpi(r, name, scale), _kpi(b, name, scale)

        hour = 1 / 3600
        return [
            Row("downtime", *kpi("downtime_s", hour), "hours"),
            Row("availability", *kpi("availability"), "pct"),
            Row(
                "restore time per episode",
                *kpi("mtrs_episode_mean_s", hour),
                "hours",
                "MTRS per episode (mean)",
            ),
            Row("MTRS (mean)", *kpi("mtrs_mean_s", hour), "hours", "MTRS per incident (mean)"),
            Row("episodes restored", *kpi("mtrs_episode_n"), "count"),
            Row("incidents", *kpi("incidents"), "count", "incidents opened"),
            Row("reopens", reopens(r), reopens(b), "count"),
            Row("repeat failures", repeats(r), repeats(b), "count"),
            Row("self-resolution rate", *kpi("self_resolution_rate"), "pct"),
            Row("incidents resolved", *kpi("resolved"), "count"),
            Row("dispatches", *kpi("resolved_field"), "count"),
            Row("dispatch cost", r.dispatch_cost, b.dispatch_cost, "money"),
        ]

    def table(self) -> str:
        header = ("", "remote maintenance", "baseline (dispatch)", "difference")
        body = [row.cells() for row in self.rows()]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(4)]

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(
                c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)
            )

        days = self.remote.scenario.days
        title = (
            f"scenario {self.remote.scenario.name}, seed {self.remote.scenario.seed}, {days:g} simulated days"
        )
        note = (
            "MTRS per episode: the mean restore time per episode (fault → restore, each outage); "
            "per incident: first fault to last restore of an incident, reopens included "
            "(docs/kpis.md)."
        )
        return "\n".join(
            [title, line(header), line(tuple("-" * w for w in widths)), *(line(c) for c in body), note]
        )


async def compare_scenario(
    scenario: Scenario,
    workdir: Path,
    *,
    on_progress: Callable[[str, Progress], None] | None = None,
    **run_options: object,
) -> Comparison:
    """Run ``scenario`` twice with the same seed (remote maintenance on, then off)."""
    results: dict[bool, RunResult] = {}
    for remote in (True, False):
        label = "remote" if remote else "baseline"
        report = (lambda p, label=label: on_progress(label, p)) if on_progress else None
        results[remote] = await run_scenario(
            scenario.with_overrides(remote_maintenance=remote),
            workdir / label,
            on_progress=report,
            **run_options,  # type: ignore[arg-type]
        )
    return Comparison(remote=results[True], baseline=results[False])
