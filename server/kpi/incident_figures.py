"""Incident phases of the SQL engine, on what the incident rollups did not serve
(:mod:`server.kpi.incident_months`): the incidents read once into ``kpi_incidents``, then the
resolved aggregates, the counts (opened, failures, repeats, still open), failure episodes and
transient faults, each signed as :func:`server.kpi.incident_months.signed` says.

Order: after :func:`server.kpi.incident_months.resolved_rolled`; :func:`load_incidents` before
every other phase here and before :mod:`server.kpi.percentiles`.
"""

# SQL text here is composed from fixed fragments (names, dialect spellings, code constants);
# every value from the data or the request is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from sqlalchemy import text

from server.db.models import Channel
from server.kpi.calendar import to_datetime
from server.kpi.incident_months import raw_ranges, signed
from server.kpi.report_context import Accumulator, ReportContext, execute, fetch, through_end
from server.kpi.sql import OPEN_END

__all__ = ["counts", "episodes", "load_incidents", "open_join", "resolved", "transients"]

_FAILURE = "i.effect = 'down' AND NOT i.external"


def open_join() -> str:
    """kpi_incidents i still open at the end of bucket kb."""
    return "i.ds < kb.be AND (i.rvs IS NULL OR i.rvs >= kb.be)"


async def load_incidents(ctx: ReportContext, acc: Accumulator) -> None:
    """Every incident a KPI of this report can touch, read once into kpi_incidents:
    resolved, opened, failed or still open in P, or a failure reaching into P. Each branch
    is an index range; the planners read each row once (SQLite's multi-index OR, PostgreSQL's
    BitmapOr). With months rolled up only the raw ranges are read — the partial months at
    P's edges, plus what is still open — and the devices the rollups do not serve are read
    whole."""
    d = ctx.dialect
    fault = d.least("i.fault_s", "i.detect_s")
    if through_end(acc, "open", ctx.period.te, ctx.params["be_min"]):
        still_open = f"i.resolved_s >= :be_min AND {d.hide('i.detect_s')} < :te"
    else:
        still_open = f"i.detect_s < :te AND {d.hide('i.resolved_s')} >= :be_min"
    branches = [still_open, "i.resolved_s IS NULL"]  # open: at a bucket's end, or a failure without an end
    ranges: dict[str, float] = {}
    for k, (low, high) in enumerate(raw_ranges(ctx, acc)):
        lo, hi = f"raw{k}_lo", f"raw{k}_hi"
        ranges[lo], ranges[hi] = low, high
        branches += [
            f"i.{column} >= :{lo} AND i.{column} < :{hi}" for column in ("resolved_s", "detect_s", "fault_s")
        ]
        if acc.rolled is not None:
            continue  # episodes check earlier failures in the incidents table
        if through_end(acc, "spanning", low, low):  # a failure's end after the range's start
            branches += [
                f"i.restored_s > :{lo}",
                f"i.resolved_s > :{lo} AND {d.hide('i.restored_s')} IS NULL",
            ]
        else:  # a failure's start before it
            branches += [f"i.fault_s < :{lo}", f"i.detect_s < :{lo}"]
    anywhere = "\n               OR ".join(f"({branch})" for branch in branches)
    insert = f"""
        INSERT INTO kpi_incidents
        SELECT i.id, i.device_id, p.customer_id, p.site_id, p.model, i.fault_code,
               CASE WHEN {_FAILURE} THEN 1 ELSE 0 END, {fault}, i.detect_s, i.ack_s, i.respond_s,
               i.restored_s, i.resolved_s, i.channel, CASE WHEN i.needs_dispatch THEN 1 ELSE 0 END,
               CASE WHEN i.remote_used THEN 1 ELSE 0 END, i.visits, COALESCE(c.cost_per_dispatch, 0),
               p.kept
        FROM incidents i
        JOIN kpi_pieces p ON p.device_id = i.device_id AND p.pf <= {fault} AND {fault} < p.pt
        LEFT JOIN customers c ON c.id = p.customer_id
        WHERE p.model_kept = 1 AND """
    started = time.perf_counter()
    await execute(ctx, acc, f"{insert}({anywhere})", **ranges)
    if acc.rolled is not None and acc.rolled.unserved:
        # every incident of these devices (a superset: each step bounds its rows)
        await execute(
            ctx,
            acc,
            f"{insert}i.device_id IN (SELECT device_id FROM kpi_unserved)"
            " AND i.id NOT IN (SELECT k.id FROM kpi_incidents k)",
        )
    if d.pg:
        await ctx.session.execute(text("ANALYZE kpi_incidents"))
    acc.timings["incidents"] = time.perf_counter() - started


async def resolved(ctx: ReportContext, acc: Accumulator) -> None:
    """The incidents resolved in each bucket that the rollups did not serve (sign +1), less
    those of an extended month's part outside P that they did (sign -1)."""
    fixed = "COALESCE(i.rss, i.rvs)"
    names = [c.value for c in Channel]
    channels = ",\n".join(
        f"SUM(CASE WHEN i.channel = :ch_{k} THEN kb.sgn ELSE 0 END) AS ch_{k}" for k in range(len(names))
    )
    avoided = "i.channel IN ('remote', 'customer') AND i.nd = 1"
    nonneg = ctx.dialect.nonneg
    sql = f"""
        SELECT {ctx.group("i", "i.code")} AS g, kb.b,
               SUM(kb.sgn) AS resolved,
               {channels},
               SUM(CASE WHEN {avoided} THEN kb.sgn ELSE 0 END) AS avoided,
               SUM(CASE WHEN {avoided} THEN kb.sgn * i.cost ELSE 0 END) AS avoided_value,
               SUM(CASE WHEN {avoided} THEN kb.sgn * {nonneg(f":baseline - {nonneg(f'{fixed} - i.fs')}")}
                   ELSE 0 END) AS downtime_avoided,
               SUM(CASE WHEN i.channel = 'field' AND i.visits <= 1 AND NOT EXISTS (
                       SELECT 1 FROM incidents j
                       WHERE j.device_id = i.device_id AND j.fault_code = i.code
                         AND j.fault_s >= {fixed} AND j.detect_s >= {fixed}
                         AND {ctx.dialect.least("j.fault_s", "j.detect_s")} < {fixed} + :repeat AND j.id <> i.id
                   ) THEN kb.sgn ELSE 0 END) AS ftf,
               SUM(CASE WHEN i.rss IS NOT NULL THEN kb.sgn * {nonneg("i.rss - i.fs")} END) AS t_mtrs,
               SUM(CASE WHEN i.rss IS NOT NULL THEN kb.sgn ELSE 0 END) AS n_mtrs,
               SUM(CASE WHEN i.acs IS NOT NULL THEN kb.sgn * {nonneg("i.acs - i.ds")} END) AS t_mtta,
               SUM(CASE WHEN i.acs IS NOT NULL THEN kb.sgn ELSE 0 END) AS n_mtta,
               SUM(CASE WHEN i.rps IS NOT NULL THEN kb.sgn * {nonneg("i.rps - i.ds")} END) AS t_mttrespond,
               SUM(CASE WHEN i.rps IS NOT NULL THEN kb.sgn ELSE 0 END) AS n_mttrespond,
               SUM(kb.sgn * {nonneg("i.rvs - i.ds")}) AS t_mttresolve
        FROM kpi_incidents i CROSS JOIN kpi_ibuckets kb
        WHERE i.rvs >= kb.bs AND i.rvs < kb.be AND {signed(acc, "i.rvs")}{ctx.code_filter("i.code")}
        GROUP BY 1, 2
    """
    channel_params = {f"ch_{k}": name for k, name in enumerate(names)}
    for r in await fetch(ctx, acc, "resolved", sql, **channel_params):
        g, b, count, by_channel, rest = r[0], r[1], int(r[2]), r[3 : 3 + len(names)], r[3 + len(names) :]
        agg = acc.row(g, b)
        agg.resolved += count
        for name, n in zip(names, by_channel, strict=True):
            if n:
                agg.channels[name] = agg.channels.get(name, 0) + int(n)
        agg.dispatched_resolved = agg.channels.get(Channel.FIELD.value, 0)
        agg.dispatches_avoided += int(rest[0] or 0)
        agg.dispatches_avoided_value += float(rest[1] or 0.0)
        agg.downtime_avoided += float(rest[2] or 0.0)
        agg.first_time_fixes += int(rest[3] or 0)
        agg.mtrs.total, agg.mtrs.n = agg.mtrs.total + float(rest[4] or 0.0), agg.mtrs.n + int(rest[5] or 0)
        agg.mtta.total, agg.mtta.n = agg.mtta.total + float(rest[6] or 0.0), agg.mtta.n + int(rest[7] or 0)
        agg.mttrespond.total = agg.mttrespond.total + float(rest[8] or 0.0)
        agg.mttrespond.n += int(rest[9] or 0)
        agg.mttresolve.total, agg.mttresolve.n = (
            agg.mttresolve.total + float(rest[10] or 0.0),
            agg.mttresolve.n + count,
        )


async def counts(ctx: ReportContext, acc: Accumulator) -> None:
    """Opened in P (and with a remote session) and failures in P (and repeats), signed as
    :func:`resolved`; still open at each bucket's end (and how old)."""
    group = ctx.group("i", "i.code")
    repeat = """EXISTS (
                       SELECT 1 FROM incidents j
                       WHERE j.device_id = i.device_id AND j.fault_code = i.code
                         AND j.restored_s <= i.fs AND j.restored_s > i.fs - :repeat
                         AND j.effect = 'down' AND NOT j.external AND j.id <> i.id)"""
    opened = f"i.ds >= kb.bs AND i.ds < kb.be AND {signed(acc, 'i.ds')}"
    failed = f"i.failure = 1 AND i.fs >= kb.bs AND i.fs < kb.be AND {signed(acc, 'i.fs')}"
    sql = f"""
        SELECT {group} AS g, kb.b,
               SUM(CASE WHEN {opened} THEN kb.sgn ELSE 0 END) AS opened,
               SUM(CASE WHEN {opened} THEN kb.sgn * i.ru ELSE 0 END) AS remote,
               SUM(CASE WHEN {failed} THEN kb.sgn ELSE 0 END) AS failures,
               SUM(CASE WHEN {failed} AND {repeat} THEN kb.sgn ELSE 0 END) AS repeats
        FROM kpi_incidents i CROSS JOIN kpi_ibuckets kb
        WHERE (({opened}) OR ({failed})){ctx.code_filter("i.code")}
        GROUP BY 1, 2
    """
    for g, b, opened_n, remote, failures, repeats in await fetch(ctx, acc, "counts", sql):
        agg = acc.row(g, b)
        agg.incidents += int(opened_n or 0)
        agg.remote_used += int(remote or 0)
        agg.failures += int(failures or 0)
        agg.repeat_failures += int(repeats or 0)
    still = f"""
        SELECT {group} AS g, kb.b, COUNT(*), SUM(kb.be - i.ds), MAX(kb.be - i.ds)
        FROM kpi_incidents i CROSS JOIN kpi_buckets kb
        WHERE {open_join()}{ctx.code_filter("i.code")}
        GROUP BY 1, 2
    """
    for g, b, still_open, age, oldest in await fetch(ctx, acc, "open", still):
        agg = acc.row(g, b)
        agg.open_at_end += still_open
        agg.open_age.n, agg.open_age.total, agg.open_age.maximum = still_open, float(age), float(oldest)


async def episodes(ctx: ReportContext, acc: Accumulator) -> None:
    """Failures that begin an episode: that start at or after every earlier failure of the
    device ended — a running maximum over the device's failures in kpi_incidents, which
    holds every failure reaching into P when P is read whole, and all of a device's when
    the rollups do not serve it. With rolled-up months the few incidents of served devices
    read raw take it from ``kpi_episode_starts`` (built with the rollups), so the history
    before them need not be read."""
    # a failure ends at its restore, else its resolution, else never (see reference.failure_end)
    end = ctx.dialect.greatest(f"COALESCE(i.rss, i.rvs, {OPEN_END})", "i.fs")
    begins = "(w.m IS NULL OR w.s >= w.m)"
    if acc.rolled is not None:
        unserved = acc.rolled.unserved
        window = f"w.device_id IN (SELECT device_id FROM kpi_unserved) AND {begins}" if unserved else "1 = 0"
        starts = "EXISTS (SELECT 1 FROM kpi_episode_starts e WHERE e.incident_id = w.id)"
        served = " AND w.device_id NOT IN (SELECT device_id FROM kpi_unserved)" if unserved else ""
        begins = f"(({window}) OR ({starts}{served}))"
    sql = f"""
        WITH w AS (
            SELECT i.id, i.device_id, i.customer_id, i.site_id, i.model, i.code, i.kept, i.fs AS s,
                   MAX({end}) OVER (PARTITION BY i.device_id ORDER BY i.fs, {end} DESC, i.id
                                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS m
            FROM kpi_incidents i WHERE i.failure = 1
        )
        SELECT {ctx.group("w", "w.code")} AS g, kb.b, SUM(kb.sgn) AS n
        FROM w CROSS JOIN kpi_ibuckets kb
        WHERE {begins} AND w.s >= kb.bs AND w.s < kb.be
          AND {signed(acc, "w.s", "w.device_id")}{ctx.code_filter("w.code")}
        GROUP BY 1, 2
    """
    for g, b, n in await fetch(ctx, acc, "episodes", sql):
        acc.row(g, b).failure_episodes += int(n)


async def transients(ctx: ReportContext, acc: Accumulator) -> None:
    """Transient faults raised in the ranges read raw (and by the devices the rollups do not
    serve), per row and bucket."""
    raised = ctx.dialect.epoch("t.raised_at")
    times: dict[str, datetime] = {}
    branches = (
        ["t.device_id IN (SELECT device_id FROM kpi_unserved)"] if acc.rolled and acc.rolled.unserved else []
    )
    for k, (lo, hi) in enumerate(raw_ranges(ctx, acc)):
        times[f"r{k}lo_dt"], times[f"r{k}hi_dt"] = to_datetime(lo), to_datetime(hi)
        branches.append(f"(t.raised_at >= :r{k}lo_dt AND t.raised_at < :r{k}hi_dt)")
    if not branches:
        return
    sql = f"""
        SELECT {ctx.group("p", "t.code")} AS g, kb.b, SUM(kb.sgn) AS n
        FROM transient_faults t
        JOIN kpi_pieces p ON p.device_id = t.device_id AND p.kept = 1 AND p.pf <= {raised} AND {raised} < p.pt
        JOIN kpi_ibuckets kb ON {raised} >= kb.bs AND {raised} < kb.be
        WHERE {signed(acc, raised, "t.device_id")}{ctx.fault_filter("t.code")} AND ({" OR ".join(branches)})
        GROUP BY 1, 2
    """
    params: dict[str, Any] = dict(times)
    for g, b, n in await fetch(ctx, acc, "transients", sql, **params):
        acc.row(g, b).transient_faults += int(n)
