"""SQL fragments of the equipment-state phases (:mod:`server.kpi.state_time`,
:mod:`server.kpi.state_rolled`): the devices a statement covers, the known-state pieces
overlapping P, and C(x) — the scheduled time before x — from ``kpi_days``.

Every fragment is built from fixed names and code constants; the values (P's bounds, the
filters, the customers with contract hours: ``:cal_ids``) are bound parameters.
"""

# SQL text here is composed from fixed fragments (names, dialect spellings, code constants);
# every value from the data or the request is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

from typing import Literal

from server.kpi.report_context import Accumulator, ReportContext, through_end
from server.kpi.sql import CAL_24X7, DAY, OPEN_END, SLOTS, Dialect

__all__ = ["Part", "devices_cte", "known_pieces", "overlapping", "scheduled_before", "utc_day"]

Part = Literal["", "rolled", "contract", "raw"]
"""Which device pieces a statement covers: all; those of devices with a current state rollup,
24x7 (``rolled``) or with contract hours (``contract``); those of devices without (``raw``)."""

_KNOWN_STATES = "('down', 'maintenance', 'running', 'degraded')"
# a device whose state rollup is up to date
_CLEAN = "NOT EXISTS (SELECT 1 FROM kpi_rollup_dirty r WHERE r.device_id = p.device_id)"


def calendar_of(ctx: ReportContext) -> str:
    """The calendar of a piece p: its customer's when it has contract hours in scope, else 24x7."""
    if not ctx.calendars:
        return str(CAL_24X7)
    return f"CASE WHEN p.customer_id IN :cal_ids THEN p.customer_id ELSE {CAL_24X7} END"


def devices_cte(ctx: ReportContext, part: Part = "") -> str:
    """``dv``: one row per device and customer/site period — owned over [pf, dec_s), the period
    cut at decommissioning, with its customer's calendar — restricted to ``part``."""
    cal = calendar_of(ctx)
    restriction = {
        "": "",
        "rolled": f" AND {cal} = {CAL_24X7} AND {_CLEAN}",
        "contract": f" AND {cal} <> {CAL_24X7} AND {_CLEAN}",
        "raw": f" AND NOT {_CLEAN}",
    }[part]
    return f"""
            dv AS {ctx.dialect.materialized}(
                SELECT p.device_id, {ctx.group("p")} AS g, {cal} AS cal, p.pf, {ctx.dialect.least("p.pt", "p.dec_s")} AS dec_s
                FROM kpi_pieces p
                WHERE p.kept = 1 AND p.pf < :te AND p.pt > :t0 AND p.pf < p.dec_s{restriction}
            )"""


def overlapping(ctx: ReportContext, acc: Accumulator, part: Part, columns: str, states: str) -> str:
    """Intervals overlapping [t0, te) in ``states``, through whichever covering index
    (end_s, start_s, ...) or (start_s, end_s, ...) reads fewer entries."""
    d = ctx.dialect
    if part == "raw":  # the few devices the rollups do not serve: through their own index
        return f"""
                SELECT {columns} FROM state_intervals s
                WHERE s.device_id IN (SELECT device_id FROM dv) AND {d.hide("s.start_s")} < :te
                  AND ({d.hide("s.end_s")} > :t0 OR s.end_s IS NULL) AND {states}"""
    if through_end(acc, "states", ctx.period.te, ctx.period.t0):
        return f"""
                SELECT {columns} FROM state_intervals s
                WHERE s.end_s > :t0 AND {d.hide("s.start_s")} < :te AND {states}
                UNION ALL
                SELECT {columns} FROM state_intervals s
                WHERE s.end_s IS NULL AND {d.hide("s.start_s")} < :te AND {states}"""
    return f"""
                SELECT {columns} FROM state_intervals s
                WHERE s.start_s < :te AND ({d.hide("s.end_s")} > :t0 OR s.end_s IS NULL) AND {states}"""


def known_pieces(ctx: ReportContext, acc: Accumulator, part: Part) -> str:
    """The known-state pieces overlapping [t0, te) with their precedence level: every
    interval up to its planned end, and every maintenance overrun (down)."""
    d = ctx.dialect
    g, lt = d.greatest, d.least
    end = f"COALESCE(s.end_s, {OPEN_END})"
    pe = d.epoch("s.planned_end")
    level = (
        "CASE WHEN s.state = 'down' THEN (CASE WHEN s.external THEN 2 ELSE 1 END) "
        "WHEN s.state = 'maintenance' THEN 3 ELSE 4 END"
    )
    cut = f"CASE WHEN s.state = 'maintenance' AND s.planned_end IS NOT NULL THEN {lt(end, pe)} ELSE {end} END"
    overrun = (
        f"s.device_id, {g('s.start_s', pe)} AS s, {end} AS e, CASE WHEN s.external THEN 2 ELSE 1 END AS lvl"
    )
    return (
        overlapping(
            ctx,
            acc,
            part,
            f"s.device_id, s.start_s AS s, {cut} AS e, {level} AS lvl",
            f"{d.hide('s.state')} IN {_KNOWN_STATES}",
        )
        + "\n                UNION ALL"
        + overlapping(
            ctx,
            acc,
            part,
            overrun,
            f"{d.hide('s.state')} = 'maintenance' AND s.planned_end IS NOT NULL AND {pe} < {end}",
        )
    )


def utc_day(d: Dialect, x: str) -> str:
    """The UTC day number of epoch seconds ``x`` (>= 0)."""
    return f"CAST(floor({x} / {DAY}) AS BIGINT)" if d.pg else f"CAST({x} / {DAY} AS INTEGER)"


def scheduled_in_day(d: Dialect, alias: str, x: str) -> str:
    """C(x) from x's kpi_days row ``alias``: scheduled time before the day + the day's
    scheduled pieces before x."""
    g, lt = d.greatest, d.least
    pieces = " + ".join(g("0", f"{lt(x, f'{alias}.w{k}e')} - {alias}.w{k}s") for k in range(1, SLOTS + 1))
    return f"{alias}.cum + {pieces}"


def scheduled_before(d: Dialect, x: str, alias: str | None = None) -> str:
    """C(x): scheduled time of the row's calendar (``wn.cal``) before ``x`` (24x7: x itself),
    from the joined kpi_days row ``alias``, or looked up."""
    if alias is not None:
        contract = scheduled_in_day(d, alias, x)
    else:
        contract = (
            f"(SELECT {scheduled_in_day(d, 'kd', x)} FROM kpi_days kd "
            f"WHERE kd.cal = wn.cal AND kd.day = {utc_day(d, x)})"
        )
    return f"(CASE WHEN wn.cal = {CAL_24X7} THEN {x} ELSE {contract} END)"
