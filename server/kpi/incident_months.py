"""The incident rollups' phase of the SQL engine: the resolved incidents of P's whole UTC
months from ``kpi_incident_months`` (:mod:`server.kpi.incident_rollups`), and what that leaves
the raw incident phases (:mod:`server.kpi.incident_figures`) to read — :func:`signed`,
:func:`raw_ranges`.

Runs after the state phases and before :func:`server.kpi.incident_figures.load_incidents`;
it sets :attr:`Accumulator.rolled <server.kpi.report_context.Accumulator.rolled>` (and the
percentile populations of the months it serves).
"""

# SQL text here is composed from fixed fragments (names, dialect spellings, code constants);
# every value from the data or the request is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sqlalchemy import text

from server.db.models import Channel
from server.kpi.incident_rollups import decode, month_start, next_month_start, next_year_start, year_start
from server.kpi.report_context import Accumulator, ReportContext, RolledMonths, execute, select_rows
from server.kpi.sql import OPEN_END

__all__ = ["raw_ranges", "resolved_rolled", "signed"]

_COUNTS = (
    "n", "ch_auto", "ch_customer", "ch_remote", "ch_field", "avoided", "ftf", "n_mtrs", "n_mtta",
    "n_mttrespond", "t_mtrs", "t_mtta", "t_mttrespond", "t_mttresolve",
    "opened", "remote", "failures", "repeats", "episodes", "transients",
)  # fmt: skip
_BLOBS = ("v_mtrs", "v_mtta", "v_mttrespond", "v_mttresolve", "v_avoided", "v_mtrs_episode")
_WHOLE = f"p.pf = -{OPEN_END} AND p.pt = {OPEN_END}"  # the device's only period
_KEPT = "p.kept = 1 AND p.model_kept = 1"
_AVOIDED_VALUES = "CASE WHEN r.avoided > 0 THEN r.v_avoided END"


def incident_months(ctx: ReportContext) -> tuple[list[tuple[float, float, int]], list[tuple[float, float]]]:
    """The UTC months the incident rollups serve — the whole ones in one bucket, and, for a
    report of one bucket, a partial month at either end of P that lies mostly inside P — and
    the parts of those partial months outside P, to subtract: what lies outside is read raw
    with sign -1 (kpi_ibuckets), cheaper than reading what lies inside."""
    months = ctx.full_months()
    minus: list[tuple[float, float]] = []
    cuts = ctx.cuts
    if len(cuts) != 1 or not cuts[0].end > cuts[0].start:
        return months, minus
    t0, te = ctx.period.t0, ctx.period.te
    first, last = month_start(t0), next_month_start(te) if month_start(te) < te else te
    edges = [(first, next_month_start(first))]
    if month_start(te) < te and month_start(te) != first:
        edges.append((month_start(te), last))
    for ms, me in edges:
        if t0 <= ms and me <= te:
            continue  # whole: already served
        inside = min(me, te) - max(ms, t0)
        if inside > (me - ms) - inside:
            months.append((ms, me, 0))
            minus += [(lo, hi) for lo, hi in ((ms, t0), (te, me)) if lo < hi and ms <= lo and hi <= me]
    return sorted(months), minus


def signed(acc: Accumulator, column: str, device: str = "i.device_id") -> str:
    """The rows of an incident step joined to kpi_ibuckets (kb): in P and read raw (sign
    +1), or in a subtracted part of an extended month and served by the rollup (sign -1)."""
    raw = read_raw(acc, column, device)
    return f"((kb.sgn = 1 AND {raw}) OR (kb.sgn = -1 AND NOT {raw}))"


def read_raw(acc: Accumulator, column: str, device: str = "i.device_id") -> str:
    """Whether a row attributed to time ``column`` of ``device`` is read raw: outside the
    rolled-up months, or in a month of a device the rollups do not serve (kpi_unserved)."""
    if acc.rolled is None:
        return "1 = 1"
    unserved = (
        f" OR ({device} IN (SELECT device_id FROM kpi_unserved) AND EXISTS (SELECT 1 FROM"
        f" kpi_unserved u WHERE u.device_id = {device} AND u.ms <= {column} AND {column} < u.me))"
        if acc.rolled.unserved
        else ""
    )
    return f"({column} < :m_lo OR {column} >= :m_hi{unserved})"


def raw_ranges(ctx: ReportContext, acc: Accumulator) -> list[tuple[float, float]]:
    """What the incident steps read raw (besides the devices the rollups do not serve): all
    of P without rolled months; else P's parts outside them and the subtracted parts."""
    t0, te = ctx.period.t0, ctx.period.te
    if acc.rolled is None:
        return [(t0, te)]
    m_lo, m_hi = acc.rolled.lo, acc.rolled.hi
    edges = ((t0, min(m_lo, te)), (max(m_hi, t0), te))
    return [(lo, hi) for lo, hi in (*edges, *acc.rolled.minus) if lo < hi]


async def resolved_rolled(ctx: ReportContext, acc: Accumulator) -> None:
    """The ``resolved`` aggregates and percentile populations of the incidents resolved in
    the whole UTC months of P, from kpi_incident_months: one row per device and month, taken
    when the device's rollup is current and the month's incidents (their clamped t_fault in
    [lo_s, hi_s]) lie in one customer/site period. The rest — partial months, dirty devices,
    months straddling a move, and fault code reports — are read raw by the incident phases
    (see :func:`signed`)."""
    if not ctx.incident_rollups:
        return
    months, minus = incident_months(ctx)
    if not months:
        return
    started = time.perf_counter()
    if minus:
        await ctx.session.execute(
            text("INSERT INTO kpi_ibuckets (b, bs, be, sgn) VALUES (0, :bs, :be, -1)"),
            [{"bs": lo, "be": hi} for lo, hi in minus],
        )
    m_lo, m_hi = months[0][0], months[-1][1]
    # read raw: dirty devices entirely, and a moved device's months that straddle a move. The
    # moved devices are computed once: inlined, PostgreSQL re-aggregates kpi_pieces for every
    # rollup row when its statistics of kpi_incident_dirty are stale (seen: 4.6 s instead of
    # 24 ms for a year of 3,000 devices)
    await execute(
        ctx,
        acc,
        f"""
        WITH moved AS {ctx.dialect.materialized}(
            SELECT device_id FROM kpi_pieces GROUP BY device_id HAVING COUNT(*) > 1
        )
        INSERT INTO kpi_unserved
        SELECT device_id, -{OPEN_END}, {OPEN_END} FROM kpi_incident_dirty
        UNION ALL
        SELECT r.device_id, r.month_s, r.month_s + 1 FROM kpi_incident_months r
        WHERE r.month_s >= :m_lo AND r.month_s < :m_hi
          AND r.device_id IN (SELECT device_id FROM moved)
          AND NOT EXISTS (SELECT 1 FROM kpi_pieces p WHERE p.device_id = r.device_id
                          AND p.pf <= r.lo_s AND r.hi_s < p.pt)
          AND NOT EXISTS (SELECT 1 FROM kpi_incident_dirty x WHERE x.device_id = r.device_id)
        """,
        m_lo=m_lo,
        m_hi=m_hi,
    )
    # a straddling month's row was marked [month_s, month_s + 1): widen it to the month
    straddling = await select_rows(
        ctx, acc, "SELECT device_id, ms FROM kpi_unserved WHERE ms > :no_start", no_start=-OPEN_END
    )
    if straddling:
        await execute(ctx, acc, "DELETE FROM kpi_unserved WHERE ms > :no_start", no_start=-OPEN_END)
        await ctx.session.execute(
            text("INSERT INTO kpi_unserved VALUES (:d, :ms, :me)"),
            [{"d": d, "ms": ms, "me": next_month_start(ms)} for d, ms in straddling],
        )
    unserved = bool((await ctx.session.execute(text("SELECT 1 FROM kpi_unserved LIMIT 1"))).first())
    acc.timings["unserved"] = time.perf_counter() - started
    started = time.perf_counter()
    acc.rolled = RolledMonths(lo=m_lo, hi=m_hi, unserved=unserved, minus=tuple(minus))
    await rolled_rows(ctx, acc, {ms: b for ms, _, b in months})
    acc.timings["resolved_rolled"] = time.perf_counter() - started


def whole_years(bucket_of: dict[float, int]) -> dict[float, int]:
    """The UTC years all of whose months are rolled up into one bucket, with it."""
    years: dict[float, set[int]] = {}
    months: dict[float, int] = {}
    for ms, b in bucket_of.items():
        ys = year_start(ms)
        years.setdefault(ys, set()).add(b)
        months[ys] = months.get(ys, 0) + 1
    return {ys: next(iter(bs)) for ys, bs in years.items() if months[ys] == 12 and len(bs) == 1}


def _served(acc: Accumulator, column: str) -> str:
    """`` AND`` the rollup row (alias r) starting at ``column`` is not one kpi_unserved lists."""
    if acc.rolled is None or not acc.rolled.unserved:
        return ""
    return (
        " AND NOT EXISTS (SELECT 1 FROM kpi_unserved u WHERE u.device_id = r.device_id"
        f" AND u.ms <= {column} AND {column} < u.me)"
    )


def _bucket_case(column: str, prefix: str, bucket_of: dict[float, int], params: dict[str, Any]) -> str:
    """``CASE column WHEN :<prefix>_s0 THEN :<prefix>_b0 … END``: the bucket of each month (or
    year) start, the starts and buckets bound into ``params``."""
    branches = []
    for k, (start, b) in enumerate(bucket_of.items()):
        params[f"{prefix}_s{k}"], params[f"{prefix}_b{k}"] = start, b
        branches.append(f"WHEN :{prefix}_s{k} THEN CAST(:{prefix}_b{k} AS INTEGER)")
    return f"CASE {column} " + " ".join(branches) + " END"


def _concat(ctx: ReportContext, column: str) -> str:
    """The float64 bytes of ``column`` over a group, concatenated (one population)."""
    if ctx.dialect.pg:
        return f"string_agg({column}, ''::bytea)"
    return f"CAST(group_concat({column}, '') AS BLOB)"


def _report_row(alias: str, values: list[str]) -> str:
    """The sums of a report row, with the cost per dispatch after ``avoided``."""
    return ", ".join(
        [
            *(f"SUM({alias}.{c})" for c in _COUNTS[:6]),
            f"SUM({alias}.avoided * COALESCE(c.cost_per_dispatch, 0))",
            *(f"SUM({alias}.{c})" for c in _COUNTS[6:]),
            *values,
        ]
    )


async def rolled_rows(ctx: ReportContext, acc: Accumulator, bucket_of: dict[float, int]) -> None:
    """The rolled-up rows, per report row and bucket: counts and sums (SQL sums them), the
    cost per dispatch of the customer at the time, and the percentile populations and
    restore times of the dispatches avoided (each row's values are float64 bytes,
    concatenated by the database). A device with one customer/site period throughout (most)
    is summed per bucket first, in key order, and joined once; the others row by row, each
    month to the period holding its incidents."""
    params: dict[str, Any] = {}
    bucket = _bucket_case("r.month_s", "mb", bucket_of, params)
    months = f"r.month_s >= :m_lo AND r.month_s < :m_hi{_served(acc, 'r.month_s')}"
    inner = ", ".join(
        [
            *(f"SUM(r.{c}) AS {c}" for c in _COUNTS),
            *(_concat(ctx, f"r.{c}") + f" AS {c}" for c in _BLOBS[:4]),
            _concat(ctx, _AVOIDED_VALUES) + " AS v_avoided",
            _concat(ctx, "r.v_mtrs_episode") + " AS v_mtrs_episode",
        ]
    )
    outer = _report_row("x", [_concat(ctx, f"x.{c}") for c in _BLOBS])
    per_row = _report_row(
        "r",
        [
            *(_concat(ctx, f"r.{c}") for c in _BLOBS[:4]),
            _concat(ctx, _AVOIDED_VALUES),
            _concat(ctx, "r.v_mtrs_episode"),
        ],
    )
    years = whole_years(bucket_of)
    not_years = " AND (r.month_s < :y_lo OR r.month_s >= :y_hi)" if years else ""
    by_months = f"""
            SELECT r.device_id, {bucket} AS b, {inner}
            FROM kpi_incident_months r WHERE {months}{not_years}
            GROUP BY 1, 2"""
    if years:  # whole calendar years in one bucket: one row per device and year
        params["y_lo"], params["y_hi"] = min(years), next_year_start(max(years))
        year_bucket = _bucket_case("r.year_s", "yb", years, params)
        by_months += f"""
            UNION ALL
            SELECT r.device_id, {year_bucket} AS b, {inner}
            FROM kpi_incident_years r
            WHERE r.year_s >= :y_lo AND r.year_s < :y_hi{_served(acc, "r.year_s")}
            GROUP BY 1, 2"""
    statements = (
        f"""
        WITH x AS ({by_months}
        )
        SELECT {ctx.group("p")} AS g, x.b, {outer}
        FROM x JOIN kpi_pieces p ON p.device_id = x.device_id AND {_WHOLE}
        LEFT JOIN customers c ON c.id = p.customer_id
        WHERE {_KEPT}
        GROUP BY 1, 2""",
        f"""
        SELECT {ctx.group("p")} AS g, {bucket} AS b, {per_row}
        FROM kpi_incident_months r
        JOIN kpi_pieces p ON p.device_id = r.device_id AND p.pf <= r.lo_s AND r.hi_s < p.pt
        LEFT JOIN customers c ON c.id = p.customer_id
        WHERE {months} AND {_KEPT} AND NOT ({_WHOLE})
          AND r.device_id IN (SELECT device_id FROM kpi_pieces p WHERE NOT ({_WHOLE}))
        GROUP BY 1, 2""",
    )
    for k, sql in enumerate(statements):
        started = time.perf_counter()
        for row in await select_rows(ctx, acc, sql, **params):
            add_rolled(ctx, acc, *row)
        if k == 0 and years:
            acc.timings["rolled_years"] = time.perf_counter() - started


def add_rolled(ctx: ReportContext, acc: Accumulator, g: Any, b: int, n: int, *rest: Any) -> None:
    """One row of :func:`rolled_rows` into the report row (g, b)."""
    agg = acc.row(g, b)
    n = int(n)  # PostgreSQL sums sums as numeric
    rest = (
        *(int(x) for x in rest[0:4]),
        int(rest[4]),
        float(rest[5]),
        *(int(x) for x in rest[6:10]),
        *(float(x) for x in rest[10:14]),
        *(int(x) for x in rest[14:20]),
        *rest[20:],
    )
    opened, remote, failures, repeats, episodes, transients = rest[14:20]
    agg.incidents += opened
    agg.remote_used += remote
    agg.failures += failures
    agg.repeat_failures += repeats
    agg.failure_episodes += episodes
    agg.transient_faults += transients
    agg.resolved += n
    for channel, count in zip(("auto", "customer", "remote", "field"), rest[0:4], strict=True):
        if count:
            agg.channels[channel] = agg.channels.get(channel, 0) + count
    agg.dispatched_resolved = agg.channels.get(Channel.FIELD.value, 0)
    avoided, value, ftf, n_mtrs, n_mtta, n_resp, t_mtrs, t_mtta, t_resp, t_resolve = rest[4:14]
    agg.dispatches_avoided += avoided
    agg.dispatches_avoided_value += float(value)
    agg.first_time_fixes += ftf
    agg.mtrs.total, agg.mtrs.n = agg.mtrs.total + t_mtrs, agg.mtrs.n + n_mtrs
    agg.mtta.total, agg.mtta.n = agg.mtta.total + t_mtta, agg.mtta.n + n_mtta
    agg.mttrespond.total, agg.mttrespond.n = agg.mttrespond.total + t_resp, agg.mttrespond.n + n_resp
    agg.mttresolve.total, agg.mttresolve.n = agg.mttresolve.total + t_resolve, agg.mttresolve.n + n
    values = rest[20:26]
    for m, blob in enumerate(values[:4]):
        if blob:
            acc.populations.setdefault((g, b, m), []).append(decode(bytes(blob)))
    if values[4]:
        restore = decode(bytes(values[4]))
        agg.downtime_avoided += float(np.maximum(0.0, ctx.spec.baseline_restore_s - restore).sum())
    if values[5]:  # MTRS per episode: summed and ranked by server.kpi.episode_figures
        acc.episode_restores.setdefault((g, b), []).append(decode(bytes(values[5])))
