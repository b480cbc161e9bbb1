"""Equipment-state phases of the SQL engine: required time per row, and state time — nested
unions per device and bucket — for the devices the state rollups do not serve (all of them
with ``rollups=False``); the served ones go through :mod:`server.kpi.state_rolled`.

Both phases run only for reports with state KPIs (not about fault codes), after
:func:`server.kpi.prepare.prepare`.
"""

# SQL text here is composed from fixed fragments (names, dialect spellings, code constants);
# every value from the data or the request is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from server.kpi.calendar import Schedule, contract_windows
from server.kpi.report_context import Accumulator, ReportContext, fetch
from server.kpi.sql import OPEN_END, fill_days
from server.kpi.state_rolled import add_levels, add_state, state_contract, state_rolled, state_segments
from server.kpi.state_sql import Part, devices_cte, known_pieces, overlapping, scheduled_before, utc_day

__all__ = ["required_time", "schedules", "state_time"]

_LEVELS = (1, 2, 3, 4)  # down, + external, + planned, + running/degraded


def schedules(ctx: ReportContext, acc: Accumulator) -> dict[int, Schedule]:
    """Each calendar's scheduled time over P as prefix sums; customers with the same
    contract hours share one (contract windows cost a time-zone conversion a day)."""
    if acc.schedules is None:
        by_hours: dict[Any, Schedule] = {}
        acc.schedules = {}
        for cal, hours in ctx.calendars.items():
            if hours not in by_hours:
                by_hours[hours] = Schedule(contract_windows(hours, ctx.period.t0, ctx.period.te))
            acc.schedules[cal] = by_hours[hours]
    return acc.schedules


async def required_time(ctx: ReportContext, acc: Accumulator) -> None:
    """Required time per row: each device piece's scheduled time in each bucket, from the
    calendar's prefix sums (:class:`~server.kpi.calendar.Schedule`). Pieces with the same
    row, calendar and bounds are counted together; a device counts once per row."""
    if not ctx.spec.with_state:
        return
    g, lt = ctx.dialect.greatest, ctx.dialect.least
    sql = f"""
        WITH {devices_cte(ctx)}
        SELECT dv.device_id, dv.g, dv.cal, {g("dv.pf", ":t0")}, {lt("dv.dec_s", ":te")} FROM dv
    """
    rows = await fetch(ctx, acc, "required", sql)
    started = time.perf_counter()
    by_calendar = schedules(ctx, acc)
    pieces_of = Counter(device_id for device_id, *_ in rows)
    together: Counter[tuple[Any, int, float, float]] = Counter()
    alone: list[tuple[str, Any, int, float, float]] = []
    for device_id, g_, cal, lo, hi in rows:
        if hi <= lo:
            continue
        if pieces_of[device_id] == 1:
            together[g_, cal, lo, hi] += 1
        else:
            alone.append((device_id, g_, cal, lo, hi))
    cuts = ctx.cuts
    ends = [bucket.end for bucket in cuts]

    def shares(cal: int, lo: float, hi: float) -> Iterator[tuple[int, float]]:
        schedule = by_calendar.get(cal)
        for bucket in cuts[bisect_right(ends, lo) :]:
            if bucket.start >= hi:
                break
            a, e = max(lo, bucket.start), min(hi, bucket.end)
            share = e - a if schedule is None else schedule.between(a, e)
            if share > 0:
                yield bucket.index, share

    for (g_, cal, lo, hi), n in together.items():
        for b, share in shares(cal, lo, hi):
            state = acc.state(g_, b)
            state.devices += n
            state.required += share * n
    counted: set[tuple[str, Any, int]] = set()
    for device_id, g_, cal, lo, hi in alone:
        for b, share in shares(cal, lo, hi):
            state = acc.state(g_, b)
            if (device_id, g_, b) not in counted:
                counted.add((device_id, g_, b))
                state.devices += 1
            state.required += share
    acc.timings["required"] += time.perf_counter() - started


async def state_time(ctx: ReportContext, acc: Accumulator) -> None:
    """Nested unions per device and bucket: from the rollups for the devices whose rollup is
    current, then the rest raw — plain sums when no two intervals of a device overlap, else
    one pass of running maxima."""
    if not ctx.spec.with_state:
        return
    calendars = ctx.calendars
    part: Part = ""
    if ctx.rollups:
        dirty = bool(await fetch(ctx, acc, "dirty", "SELECT 1 FROM kpi_rollup_dirty LIMIT 1"))
        await state_rolled(ctx, acc)
        if calendars:
            await state_contract(ctx, acc)
            await state_segments(ctx, acc, schedules(ctx, acc))
        if not dirty:
            return
        part = "raw"  # the rest: devices whose rollup is stale
    if calendars:  # kpi_days of every calendar over P, for C(x) in SQL
        started = time.perf_counter()
        await fill_days(
            ctx.session,
            ctx.dialect,
            [(cal, hours, ctx.period.t0, ctx.period.te) for cal, hours in calendars.items()],
        )
        acc.timings["days"] = time.perf_counter() - started
    if not await overlaps(ctx, acc, part):
        await state_sum(ctx, acc, part)
        return
    await state_union(ctx, acc, part)


def _union_tail(ctx: ReportContext) -> tuple[str, str]:
    """The running maxima of ``wn`` and what follows it in :func:`state_union`: with no
    contract hours in scope, plain arithmetic, else each share's scheduled part through C(x)."""
    d = ctx.dialect
    g = d.greatest
    maxima = ",\n".join(f"MAX(CASE WHEN lvl <= {k} THEN e END) OVER win AS m{k}" for k in _LEVELS)
    # the row's share at level k is [a_k, e), a_k = max(s, M_k), when non-empty
    starts = {k: g("wn.s", f"COALESCE(wn.m{k}, wn.s)") for k in _LEVELS}
    if not ctx.calendars:
        contributions = ",\n".join(
            f"SUM(CASE WHEN wn.lvl <= {k} AND wn.e > {starts[k]} THEN wn.e - {starts[k]} ELSE 0 END) AS u{k}"
            for k in _LEVELS
        )
        tail = f"""
            SELECT wn.g, wn.b,
                   {contributions}
            FROM wn GROUP BY wn.g, wn.b"""
        return maxima, tail
    # scheduled part: C(e) - C(a_k), and C(a_k) is C(s) unless an earlier row overlaps
    shares = ",\n".join(
        f"CASE WHEN wn.lvl <= {k} AND wn.e > {starts[k]} THEN "
        f"(CASE WHEN wn.m{k} IS NULL OR wn.m{k} <= wn.s THEN -1 "
        f"ELSE {scheduled_before(d, f'wn.m{k}')} END) END AS c{k}"
        for k in _LEVELS
    )
    contributions = ",\n".join(
        f"SUM(CASE WHEN sg.c{k} IS NULL THEN 0 WHEN sg.c{k} = -1 THEN sg.ce - sg.cs "
        f"ELSE sg.ce - sg.c{k} END) AS u{k}"
        for k in _LEVELS
    )
    tail = f""",
            sg AS (
                SELECT wn.g, wn.b, {scheduled_before(d, "wn.s", "ds")} AS cs,
                       {scheduled_before(d, "wn.e", "de")} AS ce,
                       {shares}
                FROM wn
                LEFT JOIN kpi_days ds ON ds.cal = wn.cal AND ds.day = {utc_day(d, "wn.s")}
                LEFT JOIN kpi_days de ON de.cal = wn.cal AND de.day = {utc_day(d, "wn.e")}
            )
            SELECT sg.g, sg.b,
                   {contributions}
            FROM sg GROUP BY sg.g, sg.b"""
    return maxima, tail


async def state_union(ctx: ReportContext, acc: Accumulator, part: Part) -> None:
    """Nested unions when intervals of a device may overlap: each row owns what extends past
    every row before it (a running maximum per level), in one pass."""
    g, lt = ctx.dialect.greatest, ctx.dialect.least
    maxima, tail = _union_tail(ctx)
    sql = f"""
        WITH {devices_cte(ctx, part)},
        pc AS ({known_pieces(ctx, acc, part)}
        ),
        cl AS (
            SELECT pc.device_id, dv.pf, dv.g, dv.cal, kb.b, pc.lvl,
                   {g("pc.s", "kb.bs", "dv.pf")} AS s, {lt("pc.e", "kb.be", "dv.dec_s")} AS e
            FROM pc
            JOIN dv ON dv.device_id = pc.device_id AND pc.s < dv.dec_s AND pc.e > dv.pf
            JOIN kpi_buckets kb ON kb.bs < pc.e AND kb.be > pc.s
        ),
        wn AS (
            SELECT g, cal, b, lvl, s, e,
                   {maxima}
            FROM cl WHERE e > s
            WINDOW win AS (PARTITION BY device_id, pf, b ORDER BY s
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        ){tail}
    """
    add_state(acc, await fetch(ctx, acc, "state", sql))


async def overlaps(ctx: ReportContext, acc: Accumulator, part: Part) -> bool:
    """Whether two intervals of one device overlap in [t0, te): never for the incidents
    writer's intervals (docs/incidents.md), which makes their union a plain sum. One index
    probe (device_id, start_s) per interval in the period (of the raw devices only, when
    the rollups serve the rest)."""
    rows = overlapping(
        ctx,
        acc,
        part,
        "s.device_id, s.start_s, s.end_s, s.id",
        "EXISTS (SELECT 1 FROM state_intervals o WHERE o.device_id = s.device_id"
        f" AND o.start_s >= s.start_s AND o.start_s < COALESCE(s.end_s, {OPEN_END})"
        " AND o.start_s < :te AND o.id <> s.id AND (o.end_s IS NULL OR o.end_s > o.start_s))",
    )
    devices = f"WITH {devices_cte(ctx, part)}\n" if part == "raw" else ""
    return bool(await fetch(ctx, acc, "overlaps", f"{devices}SELECT 1 FROM ({rows}\n) ov LIMIT 1"))


async def state_sum(ctx: ReportContext, acc: Accumulator, part: Part) -> None:
    """State time when no two intervals of a device overlap: the pieces are disjoint, so
    each level's union is the sum of its clipped pieces (contract hours: C(e) - C(s))."""
    d = ctx.dialect
    g, lt = d.greatest, d.least
    if ctx.calendars:
        length = f"{scheduled_before(d, 'wn.e', 'de')} - {scheduled_before(d, 'wn.s', 'ds')}"
        days = f"""
            LEFT JOIN kpi_days ds ON ds.cal = wn.cal AND ds.day = {utc_day(d, "wn.s")}
            LEFT JOIN kpi_days de ON de.cal = wn.cal AND de.day = {utc_day(d, "wn.e")}"""
    else:
        length, days = "wn.e - wn.s", ""
    sql = f"""
        WITH {devices_cte(ctx, part)},
        pc AS ({known_pieces(ctx, acc, part)}
        ),
        wn AS (
            SELECT dv.g, dv.cal, kb.b, pc.lvl,
                   {g("pc.s", "kb.bs", "dv.pf")} AS s, {lt("pc.e", "kb.be", "dv.dec_s")} AS e
            FROM pc
            JOIN dv ON dv.device_id = pc.device_id AND pc.s < dv.dec_s AND pc.e > dv.pf
            JOIN kpi_buckets kb ON kb.bs < pc.e AND kb.be > pc.s
        )
        SELECT wn.g, wn.b, wn.lvl, SUM({length})
        FROM wn{days}
        WHERE wn.e > wn.s
        GROUP BY wn.g, wn.b, wn.lvl
    """
    rows: Sequence[Any] = await fetch(ctx, acc, "state", sql)
    add_levels(acc, {(g_, b, lvl): total or 0.0 for g_, b, lvl, total in rows})
