"""State time of the devices whose state rollup is current (:mod:`server.kpi.rollups`): 24x7
pieces by two prefix-sum lookups, contract-hours pieces from ``kpi_contract_months`` for their
whole months and segment by segment for the rest. Called by
:func:`server.kpi.state_time.state_time`, which reads the other devices raw."""

# SQL text here is composed from fixed fragments (names, dialect spellings, code constants);
# every value from the data or the request is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text

from server.kpi.calendar import Schedule
from server.kpi.report_context import Accumulator, ReportContext, fetch, select_rows
from server.kpi.sql import OPEN_END
from server.kpi.state_sql import devices_cte

__all__ = ["add_levels", "add_state", "state_contract", "state_rolled", "state_segments"]


def add_state(acc: Accumulator, rows: Sequence[Any]) -> None:
    """Add rows (g, b, u1, u2, u3, u4) — the four nested unions of report row (g, b)."""
    for g_, b, u1, u2, u3, u4 in rows:
        state = acc.state(g_, b)
        state.down += u1 or 0.0
        state.down_or_external += u2 or 0.0
        state.not_up += u3 or 0.0
        state.known += u4 or 0.0


def add_levels(acc: Accumulator, totals: dict[tuple[Any, int, int], float]) -> None:
    """Add (row, bucket, level) totals: a level-k piece counts at level k and every coarser
    one (down ⊆ down or external ⊆ not up ⊆ known)."""
    for (g_, b, lvl), total in totals.items():
        state = acc.state(g_, b)
        if lvl <= 1:
            state.down += total
        if lvl <= 2:
            state.down_or_external += total
        if lvl <= 3:
            state.not_up += total
        state.known += total


async def state_rolled(ctx: ReportContext, acc: Accumulator) -> None:
    """State time of the 24x7 pieces of devices with an up-to-date rollup: per piece and
    bucket [a, e), C_k(e) - C_k(a) from the segments holding a and e (none: before the
    device's first interval, 0)."""
    g, lt = ctx.dialect.greatest, ctx.dialect.least

    def seg(x: str) -> str:
        return (
            f"(SELECT s.start_s FROM kpi_state_segments s WHERE s.device_id = rg.device_id "
            f"AND s.start_s <= rg.{x} ORDER BY s.start_s DESC LIMIT 1)"
        )

    def cum(alias: str, x: str, k: int) -> str:
        return f"COALESCE({alias}.c{k} + CASE WHEN {alias}.lvl <= {k} THEN lk.{x} - {alias}.start_s ELSE 0 END, 0)"

    sums = ",\n".join(f"SUM({cum('ze', 'e', k)} - {cum('za', 'a', k)}) AS u{k}" for k in (1, 2, 3, 4))
    sql = f"""
        WITH {devices_cte(ctx, "rolled")},
        rg AS (
            SELECT dv.device_id, dv.g, kb.b, {g("kb.bs", "dv.pf")} AS a, {lt("kb.be", "dv.dec_s")} AS e
            FROM dv JOIN kpi_buckets kb ON kb.bs < dv.dec_s AND kb.be > dv.pf
        ),
        lk AS (
            SELECT rg.device_id, rg.g, rg.b, rg.a, rg.e, {seg("a")} AS sa, {seg("e")} AS se
            FROM rg WHERE rg.e > rg.a
        )
        SELECT lk.g, lk.b,
               {sums}
        FROM lk
        LEFT JOIN kpi_state_segments za ON za.device_id = lk.device_id AND za.start_s = lk.sa
        LEFT JOIN kpi_state_segments ze ON ze.device_id = lk.device_id AND ze.start_s = lk.se
        GROUP BY lk.g, lk.b
    """
    add_state(acc, await fetch(ctx, acc, "state_rolled", sql))


async def state_contract(ctx: ReportContext, acc: Accumulator) -> None:
    """State time of the contract-hours pieces of devices with an up-to-date rollup, for
    their whole UTC months in P when ``kpi_contract_months`` serves every one of them (same
    customer, same contract hours); the rest of each piece — its partial months at the
    ends, or all of it — goes to kpi_state_raw for :func:`state_segments`. One pass: a row
    per piece and bucket with its served and whole months."""
    g, lt = ctx.dialect.greatest, ctx.dialect.least
    months = ctx.full_months()
    started = time.perf_counter()
    if months and ctx.hours_keys:
        await ctx.session.execute(
            text("INSERT INTO kpi_months (ms, me, b) VALUES (:ms, :me, :b)"),
            [{"ms": ms, "me": me, "b": b} for ms, me, b in months],
        )
        await ctx.session.execute(
            text("INSERT INTO kpi_calendars (cal, hkey) VALUES (:cal, :hkey)"),
            [{"cal": cal, "hkey": key} for cal, key in ctx.hours_keys.items() if cal in ctx.calendars],
        )
    lo, hi = g(":t0", "dv.pf"), lt(":te", "dv.dec_s")
    sql = f"""
        WITH {devices_cte(ctx, "contract")}
        SELECT dv.device_id, dv.pf, dv.g, km.b, {lo}, {hi}, COUNT(km.ms), COUNT(r.device_id),
               MIN(km.ms), MAX(km.me), SUM(r.u1), SUM(r.u2), SUM(r.u3), SUM(r.u4)
        FROM dv
        LEFT JOIN kpi_months km ON km.ms >= dv.pf AND km.me <= dv.dec_s
        LEFT JOIN kpi_calendars kc ON kc.cal = dv.cal
        LEFT JOIN kpi_contract_months r ON r.device_id = dv.device_id AND r.month_s = km.ms
                                       AND r.customer_id = dv.cal AND r.hours_key = kc.hkey
        WHERE {lo} < {hi}
        GROUP BY dv.device_id, dv.pf, dv.g, km.b, {lo}, {hi}
    """
    pieces: dict[tuple[str, float], list[Any]] = {}
    for row in await select_rows(ctx, acc, sql):
        pieces.setdefault((row[0], row[1]), []).append(row)
    raw: list[dict[str, Any]] = []
    for (device_id, pf), rows in pieces.items():
        piece_lo, piece_hi = rows[0][4], rows[0][5]
        if not all(0 < r[6] == r[7] for r in rows):  # a whole month not served: all raw
            raw.append({"d": device_id, "pf": pf, "lo": piece_lo, "hi": piece_hi})
            continue
        add_state(acc, [(r[2], r[3], *r[10:14]) for r in rows])
        first, last = min(r[8] for r in rows), max(r[9] for r in rows)
        raw += [
            {"d": device_id, "pf": pf, "lo": a, "hi": e}
            for a, e in ((piece_lo, first), (last, piece_hi))
            if a < e
        ]
    if raw:
        await ctx.session.execute(
            text("INSERT INTO kpi_state_raw (device_id, pf, lo, hi) VALUES (:d, :pf, :lo, :hi)"), raw
        )
        if ctx.dialect.pg:
            await ctx.session.execute(text("ANALYZE kpi_state_raw"))
    acc.timings["state_contract"] = time.perf_counter() - started


async def state_segments(ctx: ReportContext, acc: Accumulator, schedules: dict[int, Schedule]) -> None:
    """State time of the ranges in kpi_state_raw (contract-hours pieces of devices with an
    up-to-date rollup, but for their served months): their segments (disjoint by
    construction, a segment ends where the next begins) cut at the range and the buckets,
    each counting its scheduled time from the calendar's prefix sums (``schedules``) — the
    segment holding the range's start, then every segment starting before its end (index
    ranges on (device_id, start_s))."""
    g, lt = ctx.dialect.greatest, ctx.dialect.least
    sql = f"""
        WITH {devices_cte(ctx, "contract")},
        hd AS {ctx.dialect.materialized}(
            SELECT dv.device_id, dv.pf, rr.lo, rr.hi, dv.g, dv.cal,
                   COALESCE((SELECT s.start_s FROM kpi_state_segments s
                             WHERE s.device_id = dv.device_id AND s.start_s <= rr.lo
                             ORDER BY s.start_s DESC LIMIT 1), -{OPEN_END}) AS first
            FROM kpi_state_raw rr JOIN dv ON dv.device_id = rr.device_id AND dv.pf = rr.pf
        ),
        sg AS (
            SELECT hd.lo, hd.hi, hd.g, hd.cal, s.lvl, s.start_s AS s,
                   COALESCE(LEAD(s.start_s) OVER (PARTITION BY hd.device_id, hd.pf, hd.lo ORDER BY s.start_s),
                            {OPEN_END}) AS e
            FROM hd JOIN kpi_state_segments s
              ON s.device_id = hd.device_id AND s.start_s >= hd.first AND s.start_s < hd.hi
        ),
        wn AS (
            SELECT sg.g, sg.cal, kb.b, sg.lvl,
                   {g("sg.s", "kb.bs", "sg.lo")} AS s, {lt("sg.e", "kb.be", "sg.hi")} AS e
            FROM sg JOIN kpi_buckets kb ON kb.bs < sg.e AND kb.be > sg.s
            WHERE sg.lvl <= 4
        )
        SELECT wn.g, wn.cal, wn.b, wn.lvl, wn.s, wn.e FROM wn WHERE wn.e > wn.s
    """
    rows = await fetch(ctx, acc, "state_segments", sql)
    started = time.perf_counter()
    totals: dict[tuple[Any, int, int], float] = {}
    for g_, cal, b, lvl, a, e in rows:
        key = (g_, b, lvl)
        totals[key] = totals.get(key, 0.0) + schedules[cal].between(a, e)
    add_levels(acc, totals)
    acc.timings["state_segments"] += time.perf_counter() - started
