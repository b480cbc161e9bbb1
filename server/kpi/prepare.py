"""The first phases of a SQL report (:mod:`server.kpi.query`): the temporary tables, the column
bounds the access paths are chosen from, every device's customer/site periods
(``kpi_pieces``), and the report rows that exist even when empty."""

# SQL text here is composed from fixed fragments (names, dialect spellings, code constants);
# every value from the data or the request is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import time

from sqlalchemy import func, select, text

from server.db.models import Incident, StateInterval
from server.kpi.report import DEVICE_GROUPS
from server.kpi.report_context import Accumulator, ReportContext, execute, fetch
from server.kpi.sql import OPEN_END, create_temporary_tables

__all__ = ["prepare", "row_keys"]

# (bounds key, start column, end column)
_BOUNDED = (
    ("states", StateInterval.start_s, StateInterval.end_s),
    ("open", Incident.detect_s, Incident.resolved_s),
    ("spanning", Incident.fault_s, Incident.restored_s),
)


async def prepare(ctx: ReportContext, acc: Accumulator) -> None:
    """Temporary tables (with the buckets), column bounds and kpi_pieces: what every later
    phase reads."""
    started = time.perf_counter()
    await create_temporary_tables(ctx.session, ctx.dialect, cuts=ctx.cuts, t0=ctx.period.t0, te=ctx.period.te)
    await load_bounds(ctx, acc)
    await load_pieces(ctx, acc)
    acc.timings["prepare"] = time.perf_counter() - started


async def load_bounds(ctx: ReportContext, acc: Accumulator) -> None:
    """Column ranges (one index lookup each) from which the access paths are chosen
    (:func:`server.kpi.report_context.through_end`)."""
    for key, low, high in _BOUNDED:
        parts = [select(fn(col)).scalar_subquery() for col in (low, high) for fn in (func.min, func.max)]
        row = (await ctx.session.execute(select(*parts))).one()
        if None not in row:
            acc.bounds[key] = (row[0], row[1], row[2], row[3])


async def load_pieces(ctx: ReportContext, acc: Accumulator) -> None:
    """kpi_pieces: every device's customer/site periods (docs/kpis.md, "customer at the
    time"): a recorded period lasts until the device's next one and the first reaches back
    to the beginning; a device without any has its current customer/site throughout.
    ``kept``: the filters keep the period; ``model_kept``: they keep the device."""
    d = ctx.dialect
    decommissioned = f"COALESCE({d.epoch('d.decommissioned_at')}, {OPEN_END})"
    model = "d.model = :f_model" if ctx.spec.model is not None else "1 = 1"
    sql = f"""
        INSERT INTO kpi_pieces
        SELECT p.device_id, p.customer_id, p.site_id, p.model, p.pf, p.pt, p.dec_s,
               CASE WHEN {ctx.piece_filter} THEN 1 ELSE 0 END, p.model_kept
        FROM (
            SELECT a.device_id, a.customer_id, a.site_id, d.model,
                   CASE WHEN ROW_NUMBER() OVER w = 1 THEN -{OPEN_END} ELSE a.valid_from_s END AS pf,
                   COALESCE(LEAD(a.valid_from_s) OVER w, {OPEN_END}) AS pt,
                   {decommissioned} AS dec_s, CASE WHEN {model} THEN 1 ELSE 0 END AS model_kept
            FROM device_assignments a JOIN devices d ON d.id = a.device_id
            WINDOW w AS (PARTITION BY a.device_id ORDER BY a.valid_from_s, a.id)
            UNION ALL
            SELECT d.id, d.customer_id, d.site_id, d.model, -{OPEN_END}, {OPEN_END}, {decommissioned},
                   CASE WHEN {model} THEN 1 ELSE 0 END
            FROM devices d
            WHERE NOT EXISTS (SELECT 1 FROM device_assignments a WHERE a.device_id = d.id)
        ) p
    """
    started = time.perf_counter()
    await execute(ctx, acc, sql)
    if d.pg:
        await ctx.session.execute(text("ANALYZE kpi_pieces"))
    acc.timings["pieces"] = time.perf_counter() - started


async def row_keys(ctx: ReportContext, acc: Accumulator) -> None:
    """The rows a report has even when nothing happened in them: every bucket (no grouping,
    week, month), or every customer/site/model with a device in P."""
    group_by = ctx.spec.group_by
    if group_by is None or group_by.is_time:
        for bucket in ctx.cuts:
            acc.row(None, bucket.index)
    elif group_by in DEVICE_GROUPS:
        sql = (
            f"SELECT DISTINCT {ctx.group('p')} FROM kpi_pieces p "
            "WHERE p.kept = 1 AND p.pf < :te AND p.pt > :t0"
        )
        for (g,) in await fetch(ctx, acc, "keys", sql):
            acc.row(g, 0)
