"""The percentile phase of the SQL engine: medians and p90s of the duration KPIs (MTRS,
MTTA, MTTRespond, MTTResolve, open age) per row and bucket.

PostgreSQL ranks with ``percentile_cont`` (the same interpolation as
:func:`server.kpi.intervals.percentile`) when nothing was rolled up; otherwise — SQLite, or
populations that include rolled-up months — the values are fetched (one row per incident) and
ranked here, with those :func:`server.kpi.incident_months.resolved_rolled` decoded. Runs after
:func:`server.kpi.incident_figures.load_incidents`.
"""

# SQL text here is composed from fixed fragments (names, dialect spellings, code constants);
# every value from the data or the request is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import time

import numpy as np

from server.kpi.incident_figures import open_join
from server.kpi.incident_months import signed
from server.kpi.intervals import array_percentiles, multiset_difference
from server.kpi.report import DurationSummary
from server.kpi.report_context import Accumulator, Population, ReportContext, fetch

__all__ = ["METRICS", "percentiles"]

METRICS = ("mtrs", "mtta", "mttrespond", "mttresolve", "open_age")
"""The duration summaries of a row, by metric index m."""


async def percentiles(ctx: ReportContext, acc: Accumulator) -> None:
    """Medians and p90s: rank each population in SQL, or fetch its values and rank them here."""
    if ctx.dialect.pg and acc.rolled is None:
        await _ranked_in_sql(ctx, acc)
    else:
        await _ranked_here(ctx, acc)


def _values(ctx: ReportContext) -> tuple[str, str, str, str]:
    """The four resolved-incident durations of kpi_incidents i (metric 0-3), NULL when the
    incident lacks the time they need."""
    nonneg = ctx.dialect.nonneg
    return (
        f"CASE WHEN i.rss IS NOT NULL THEN {nonneg('i.rss - i.fs')} END",
        f"CASE WHEN i.acs IS NOT NULL THEN {nonneg('i.acs - i.ds')} END",
        f"CASE WHEN i.rps IS NOT NULL THEN {nonneg('i.rps - i.ds')} END",
        nonneg("i.rvs - i.ds"),
    )


async def _ranked_in_sql(ctx: ReportContext, acc: Accumulator) -> None:
    group = ctx.group("i", "i.code")
    mtrs, mtta, respond, resolve = _values(ctx)
    value = f"""CASE m.m
            WHEN 0 THEN {mtrs}
            WHEN 1 THEN {mtta}
            WHEN 2 THEN {respond}
            ELSE {resolve} END"""
    sql = f"""
        WITH x AS (
            SELECT {group} AS g, kb.b AS b, m.m AS m, {value} AS v
            FROM kpi_incidents i CROSS JOIN kpi_buckets kb
            CROSS JOIN (SELECT 0 AS m UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) m
            WHERE i.rvs >= kb.bs AND i.rvs < kb.be{ctx.code_filter("i.code")}
            UNION ALL
            SELECT {group} AS g, kb.b AS b, 4 AS m, kb.be - i.ds AS v
            FROM kpi_incidents i CROSS JOIN kpi_buckets kb
            WHERE {open_join()}{ctx.code_filter("i.code")}
        )
        SELECT g, b, m, percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY v)
        FROM x WHERE v IS NOT NULL GROUP BY 1, 2, 3
    """
    for g, b, m, (median, p90) in await fetch(ctx, acc, "percentiles", sql):
        summary: DurationSummary = getattr(acc.row(g, b), METRICS[m])
        summary.median, summary.p90 = float(median), float(p90)


async def _ranked_here(ctx: ReportContext, acc: Accumulator) -> None:
    group = ctx.group("i", "i.code")
    per_incident = f"""
        SELECT {group} AS g, kb.b AS b, kb.sgn, {", ".join(_values(ctx))}
        FROM kpi_incidents i CROSS JOIN kpi_ibuckets kb
        WHERE i.rvs >= kb.bs AND i.rvs < kb.be AND {signed(acc, "i.rvs")}{ctx.code_filter("i.code")}
    """
    open_age = f"""
        SELECT {group} AS g, kb.b AS b, kb.be - i.ds
        FROM kpi_incidents i CROSS JOIN kpi_buckets kb
        WHERE {open_join()}{ctx.code_filter("i.code")}
    """
    raw: dict[Population, list[float]] = {}
    removed: dict[Population, list[float]] = {}  # of an extended month, outside P
    for g, b, sgn, *values in await fetch(ctx, acc, "percentiles", per_incident):
        into = raw if sgn > 0 else removed
        for m, v in enumerate(values):
            if v is not None:
                into.setdefault((g, b, m), []).append(float(v))
    fetched = acc.timings["percentiles"]
    for g, b, v in await fetch(ctx, acc, "percentiles", open_age):
        if v is not None:
            raw.setdefault((g, b, 4), []).append(float(v))
    acc.timings["percentiles"] += fetched
    started = time.perf_counter()
    populations = acc.populations  # with those of the rolled-up months
    for key, values in raw.items():
        populations.setdefault(key, []).append(np.array(values, dtype=np.float64))
    for key, chunks in populations.items():
        merged = np.concatenate(chunks)
        if key in removed:
            merged = multiset_difference(merged, np.array(removed[key], dtype=np.float64))
        summary: DurationSummary = getattr(acc.row(key[0], key[1]), METRICS[key[2]])
        summary.median, summary.p90 = array_percentiles(merged, ((1, 2), (9, 10)))
    acc.timings["ranks"] = time.perf_counter() - started
