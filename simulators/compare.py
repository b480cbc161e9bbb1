"""``fleetcare sim compare``: the same scenario and seed with remote maintenance on and off.

Fault arrivals draw from their own seeded stream, so both runs see the same faults; only what
people do differs. The baseline (remote maintenance off) is the policy of dispatching a field
engineer for every incident that does not clear by itself. The table is the before/after a
service organisation reports; every figure comes from the server's ``/api/v1/kpis`` of each run
(dispatch cost: ``resolved_field`` x the customer's ``cost_per_dispatch``), except the two rows
read from each run's incident list: the restore time per fault episode and the reopens.

Why both restore rows: the server's MTRS is, per resolved incident, ``t_restored - t_fault``, and
a fault that comes back within ``incidents.reopen_window_days`` (30) *reopens* its incident —
``t_fault`` of the first episode, ``t_restored`` of the last. With fast remote and customer fixes,
recurring faults reopen resolved incidents again and again, so MTRS spans the working days
between episodes and can come out *higher* with remote maintenance although every single outage
is shorter; "restore time per episode" (mean of ``end - start`` over the fault episodes that
ended in the period) is the outage length itself (docs/simulators.md, "Reading the compare table").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simulators.run import Progress, RunResult, run_scenario
from simulators.scenario import Scenario

__all__ = ["Comparison", "Row", "compare_scenario", "episode_restore_hours", "reopens"]


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    remote: float | None
    baseline: float | None
    fmt: str  # "hours", "pct", "count", "money"

    @property
    def difference(self) -> float | None:
        if self.remote is None or self.baseline is None:
            return None
        return self.remote - self.baseline

    def cells(self) -> tuple[str, str, str, str]:
        return (
            self.label,
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


def episode_restore_hours(result: RunResult) -> float | None:
    """Mean hours from a fault episode's start to its end, over the fault episodes (of every
    incident, reopened ones included) that ended within the run's period."""
    start, end = result.start.timestamp(), result.end.timestamp()
    durations = [
        float(e["end_s"]) - float(e["start_s"])
        for incident in result.incidents
        if incident.get("kind", "fault") == "fault"
        for e in incident.get("episodes") or []
        if e.get("end_s") is not None and start <= float(e["end_s"]) < end
    ]
    return sum(durations) / len(durations) / 3600 if durations else None


def reopens(result: RunResult) -> float:
    """How many times a fault came back and reopened (or re-joined) an earlier incident."""
    return float(sum(int(i.get("reopened") or 0) for i in result.incidents))


def _kpi(result: RunResult, name: str, scale: float = 1.0) -> float | None:
    value = result.kpis.get(name)
    return None if value is None else float(value) * scale


@dataclass(frozen=True, slots=True)
class Comparison:
    remote: RunResult
    baseline: RunResult

    def rows(self) -> list[Row]:
        r, b = self.remote, self.baseline
        return [
            Row("downtime", _kpi(r, "downtime_s", 1 / 3600), _kpi(b, "downtime_s", 1 / 3600), "hours"),
            Row("availability", _kpi(r, "availability"), _kpi(b, "availability"), "pct"),
            Row("MTRS (mean)", _kpi(r, "mtrs_mean_s", 1 / 3600), _kpi(b, "mtrs_mean_s", 1 / 3600), "hours"),
            Row("restore time per episode", episode_restore_hours(r), episode_restore_hours(b), "hours"),
            Row("reopens", reopens(r), reopens(b), "count"),
            Row(
                "self-resolution rate",
                _kpi(r, "self_resolution_rate"),
                _kpi(b, "self_resolution_rate"),
                "pct",
            ),
            Row("incidents resolved", _kpi(r, "resolved"), _kpi(b, "resolved"), "count"),
            Row("dispatches", _kpi(r, "resolved_field"), _kpi(b, "resolved_field"), "count"),
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
            "MTRS counts a reopened incident from its first fault to its last restore; "
            "restore time per episode is the mean outage (docs/simulators.md)."
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
