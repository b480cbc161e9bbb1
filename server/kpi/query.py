"""The KPIs from the database, with SQL doing the work: the same numbers as the reference
engine (:mod:`server.kpi.reference`), in a handful of statements.

How the SQL does interval arithmetic on the ``*_s`` epoch columns:

- **Union without double counting.** Per device and bucket, rows ordered by start; each row
  owns ``[max(start, M), end)`` where M is the largest end of the rows before it
  (``MAX(end) OVER (… ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)``). These shares are
  disjoint and their union is the union of the rows. Four running maxima, one per precedence
  level, give the nested unions (down ⊆ +external ⊆ +planned ⊆ +running) in one pass.
- **Required time.** A share [a, e) counts C(e) - C(a), C(x) being the scheduled time of the
  device's calendar before x (24x7: x; contract hours: a lookup in ``kpi_days``); required
  time is C(e) - C(a) of each device piece and bucket, computed here from the calendar's
  prefix sums (one row per device piece).
- **Failure episodes** use the same running maximum over a device's failures: a failure
  starts an episode when it starts at or after every earlier one ended.
- **Disjoint intervals** (what the incidents writer stores, docs/incidents.md): when no two
  intervals of a device overlap in the period (one index probe each), the unions are plain
  sums of the clipped pieces per level; the running maxima are only for overlapping data.
- **Rollups** (:mod:`server.kpi.rollups`): 24x7 pieces of devices whose rollup is up to date
  take their state time from two prefix-sum lookups, contract-hours pieces from their
  segments (disjoint: the sum path); devices whose rollup is stale go through the paths above.
- **Percentiles**: PostgreSQL's ``percentile_cont``; on SQLite the values are fetched (one row
  per incident) and ranked in Python with :func:`server.kpi.intervals.percentile`.
- **Indexes** (migration 0004): intervals overlapping P are found through (end_s, start_s, …)
  or (start_s, end_s, …), whichever is narrower for P; incidents through ranges on resolved_s,
  detect_s, fault_s, restored_s — each candidate read once into ``kpi_incidents``.

The work is split by concept, each phase ``async def phase(ctx, acc)`` over a
:class:`~server.kpi.report_context.ReportContext` (the inputs and bound parameters) and an
:class:`~server.kpi.report_context.Accumulator` (what the phases find), run in the order of
:data:`PHASES`: ``prepare`` (temporary tables, bounds, customer/site periods), ``state_time``
and ``state_rolled`` (required and state time; ``state_sql`` their fragments),
``incident_months`` (what the incident rollups serve), ``incident_figures`` (the incidents
read raw), ``episode_figures`` (MTRS per episode, from ``incident_episodes``),
``knowledge_figures``, ``percentiles``; ``sql`` holds the temporary tables and
dialect spellings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Customer, Site
from server.kpi.calendar import ContractHours, buckets, parse_contract_hours
from server.kpi.episode_figures import episode_restores
from server.kpi.incident_figures import counts, episodes, load_incidents, resolved, transients
from server.kpi.incident_months import resolved_rolled
from server.kpi.knowledge_figures import knowledge
from server.kpi.percentiles import percentiles
from server.kpi.prepare import prepare, row_keys
from server.kpi.report import Names, Report, ReportSpec, assemble
from server.kpi.report_context import Accumulator, ReportContext
from server.kpi.rollups import hours_key
from server.kpi.sql import empty_temporary_tables
from server.kpi.state_time import required_time, state_time

__all__ = ["PHASES", "Phase", "compute_report"]

logger = logging.getLogger(__name__)

Phase = Callable[[ReportContext, Accumulator], Awaitable[None]]
"""One step of a report: reads the context and what earlier phases accumulated, adds its part."""

PHASES: tuple[Phase, ...] = (
    prepare,  # temporary tables, column bounds, kpi_pieces
    row_keys,  # the rows that exist even when empty
    required_time,  # state KPIs only (as is state_time)
    state_time,
    resolved_rolled,  # which months the incident rollups serve: the rest is read raw
    load_incidents,
    resolved,
    episode_restores,  # after resolved_rolled (the rolled-up months' episode restores)
    knowledge,  # after resolved: "without a link" is the rest of its resolve time
    percentiles,  # after resolved_rolled (its populations) and load_incidents
    counts,
    episodes,
    transients,
)
"""The phases of :func:`compute_report`, in the order they run."""


async def compute_report(
    session: AsyncSession, spec: ReportSpec, *, now: datetime | None = None, rollups: bool = True
) -> Report:
    """The report for ``spec`` from the database behind ``session`` (read-only but for the
    temporary tables, emptied afterwards). ``rollups``: state time of up-to-date devices from
    :mod:`server.kpi.rollups` (the same numbers; False reads every interval)."""
    started = time.perf_counter()
    period = spec.period(now)
    cuts = buckets(period.t0, period.te, spec.grain)
    customers = (await session.scalars(select(Customer))).all()
    sites = (await session.execute(select(Site.id, Site.customer_id, Site.name))).all()
    names = Names({c.id: c.name for c in customers}, {sid: (cid, name) for sid, cid, name in sites})
    calendars: dict[int, ContractHours] = {}
    if spec.with_state:
        for customer in customers:
            hours = parse_contract_hours(customer.contract_hours, customer.name)
            if hours is not None and (spec.customer is None or customer.id == spec.customer):
                calendars[customer.id] = hours
    ctx = ReportContext.create(
        session,
        spec,
        period,
        cuts,
        calendars=calendars,
        hours_keys={c.id: hours_key(c.contract_hours) for c in customers if c.id in calendars},
        rollups=rollups,
    )
    acc = Accumulator(with_state=spec.with_state)
    for phase in PHASES:
        await phase(ctx, acc)
    await empty_temporary_tables(session)  # on an error the caller's rollback (or the next report) does
    logger.debug(
        "kpi report %s in %.3fs: %s",
        spec,
        time.perf_counter() - started,
        ", ".join(f"{k}={v:.3f}" for k, v in acc.timings.items()),
    )
    report = assemble(spec, period, cuts, acc.rows, names=names, engine="sql")
    report.timings.update(acc.timings)
    report.timings["total"] = time.perf_counter() - started
    return report
