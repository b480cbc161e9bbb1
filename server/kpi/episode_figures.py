"""MTRS per episode in the SQL engine: the restore time of every failure episode restored in
each bucket (``incident_episodes``, migration 0014), whatever its incident's status, with its
median and p90.

The episodes of the whole UTC months the incident rollups serve come as float64 values from
:func:`server.kpi.incident_months.add_rolled` (``Accumulator.episode_restores``); this phase
reads the rest through the index on ``restored_s`` — the ranges read raw and the devices the
rollups do not serve — signed as :func:`server.kpi.incident_months.signed` says, and ranks
the merged values here (a population is a few values per device and month). An episode
belongs to its incident's customer/site at the incident's clamped t_fault, and to its fault
code, like everything else of the incident.

Order: after :func:`server.kpi.incident_months.resolved_rolled` and
:func:`server.kpi.prepare.prepare` (``kpi_pieces``).
"""

# SQL text here is composed from fixed fragments (names, dialect spellings, code constants);
# every value from the data or the request is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

from typing import Any

import numpy as np

from server.kpi.incident_months import raw_ranges, signed
from server.kpi.intervals import array_percentiles, multiset_difference
from server.kpi.report_context import Accumulator, ReportContext, fetch

__all__ = ["episode_restores"]


async def episode_restores(ctx: ReportContext, acc: Accumulator) -> None:
    """MTRS per episode of each row and bucket: the rolled-up months' values, plus those read
    raw (sign +1), less those of an extended month's part outside P (sign -1)."""
    d = ctx.dialect
    fs = d.least("i.fault_s", "i.detect_s")
    value = d.nonneg(f"e.restored_s - {d.least('e.fault_s', 'e.detect_s')}")
    branches = (
        ["i.device_id IN (SELECT device_id FROM kpi_unserved)"] if acc.rolled and acc.rolled.unserved else []
    )
    ranges: dict[str, float] = {}
    for k, (lo, hi) in enumerate(raw_ranges(ctx, acc)):
        ranges[f"e{k}lo"], ranges[f"e{k}hi"] = lo, hi
        branches.append(f"(e.restored_s >= :e{k}lo AND e.restored_s < :e{k}hi)")
    raw: dict[tuple[Any, int], list[float]] = {}
    removed: dict[tuple[Any, int], list[float]] = {}
    if branches:
        sql = f"""
            SELECT {ctx.group("p", "i.fault_code")} AS g, kb.b, kb.sgn, {value}
            FROM incident_episodes e
            JOIN incidents i ON i.id = e.incident_id
            JOIN kpi_pieces p ON p.device_id = i.device_id AND p.pf <= {fs} AND {fs} < p.pt
            JOIN kpi_ibuckets kb ON e.restored_s >= kb.bs AND e.restored_s < kb.be
            WHERE p.kept = 1 AND p.model_kept = 1 AND ({" OR ".join(branches)})
              AND {signed(acc, "e.restored_s")}{ctx.fault_filter("i.fault_code")}
        """
        for g, b, sgn, v in await fetch(ctx, acc, "episode_restores", sql, **ranges):
            (raw if sgn > 0 else removed).setdefault((g, b), []).append(float(v))
    for key in {*raw, *acc.episode_restores}:
        values = np.concatenate(
            [*acc.episode_restores.get(key, []), np.array(raw.get(key, []), dtype=np.float64)]
        )
        if key in removed:
            values = multiset_difference(values, np.array(removed[key], dtype=np.float64))
        summary = acc.row(*key).mtrs_episode
        summary.n, summary.total = len(values), float(values.sum())
        summary.median, summary.p90 = array_percentiles(values, ((1, 2), (9, 10)))
