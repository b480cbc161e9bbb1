"""What every phase of the SQL engine (:mod:`server.kpi.query`) shares: the report's inputs
(:class:`ReportContext`, fixed before the first statement) and what the phases fill
(:class:`Accumulator`), with the few helpers that read both — running a statement, the group
and filter fragments, and which access path the column bounds favour.

A phase is ``async def phase(ctx, acc) -> None``: it reads the context and what earlier phases
put in the accumulator, and adds its own part. The order is the tuple in
:mod:`server.kpi.query`; each phase's docstring says what it needs before it.

SQL text is built from fixed fragments of these modules (table and column names, dialect
spellings, code constants such as :data:`~server.kpi.sql.OPEN_END`); every value that comes from
the data or the request is a bound parameter.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from server.db.types import UtcDateTime
from server.kpi.calendar import Bucket, ContractHours, Schedule
from server.kpi.definitions import REPEAT_WINDOW_S
from server.kpi.incident_rollups import month_start, next_month_start
from server.kpi.report import GroupBy, Period, ReportSpec, RowAggregates, RowKey, StateTotals
from server.kpi.sql import Dialect, share_above, share_below

__all__ = [
    "Accumulator",
    "Bounds",
    "Population",
    "ReportContext",
    "RolledMonths",
    "execute",
    "fetch",
    "select_rows",
    "statement",
    "through_end",
]

Bounds = tuple[float, float, float, float]
"""(min start, max start, min end, max end) of a table's interval columns."""

Population = tuple[Any, int, int]
"""(group value, bucket index, metric index) of a percentile population."""

_DEVICE_COLUMN = {GroupBy.CUSTOMER: "customer_id", GroupBy.SITE: "site_id", GroupBy.MODEL: "model"}
_PIECE_FILTERS = (("customer", "p.customer_id"), ("site", "p.site_id"), ("model", "p.model"))


@dataclass(frozen=True, slots=True)
class ReportContext:
    """The inputs of one report: what is asked, over which buckets, on which database, and
    the bound parameters every statement may use (``t0``, ``te``, ``be_min``, ``repeat``,
    ``baseline``, the filters ``f_customer``, ``f_site``, ``f_model``, ``f_code``, and
    ``cal_ids``, the customers whose contract hours are in scope)."""

    session: AsyncSession
    spec: ReportSpec
    period: Period
    cuts: Sequence[Bucket]
    dialect: Dialect
    calendars: dict[int, ContractHours]  # contract hours in scope (state KPIs only)
    hours_keys: dict[int, str]  # their keys, as the contract-month rollups store them
    rollups: bool  # state time from the state rollups where they are current
    params: dict[str, Any]

    @classmethod
    def create(
        cls,
        session: AsyncSession,
        spec: ReportSpec,
        period: Period,
        cuts: Sequence[Bucket],
        *,
        calendars: dict[int, ContractHours],
        hours_keys: dict[int, str],
        rollups: bool,
    ) -> ReportContext:
        params: dict[str, Any] = {
            "t0": period.t0,
            "te": period.te,
            "repeat": REPEAT_WINDOW_S,
            "be_min": cuts[0].end if cuts else period.te,
            "baseline": spec.baseline_restore_s,
        }
        for name, _ in _PIECE_FILTERS:
            if getattr(spec, name) is not None:
                params[f"f_{name}"] = getattr(spec, name)
        if spec.fault_code is not None:
            params["f_code"] = spec.fault_code
        if calendars:  # the customers whose contract hours are in scope (state_sql.calendar_of)
            params["cal_ids"] = [int(cal) for cal in calendars]
        return cls(
            session=session,
            spec=spec,
            period=period,
            cuts=cuts,
            dialect=Dialect(session.get_bind().dialect.name),
            calendars=calendars,
            hours_keys=hours_keys,
            rollups=rollups,
            params=params,
        )

    @property
    def incident_rollups(self) -> bool:
        """Whether resolved incidents of whole months may come from kpi_incident_months: not for
        fault-code reports (the rollups are per device and month, not per code)."""
        return self.rollups and self.spec.fault_code is None and self.spec.group_by is not GroupBy.FAULT_CODE

    @property
    def piece_filter(self) -> str:
        """On kpi_pieces p: the filters on the customer/site at the time (and the model)."""
        filters = ["1 = 1"]
        filters += [
            f"{column} = :f_{name}" for name, column in _PIECE_FILTERS if getattr(self.spec, name) is not None
        ]
        return " AND ".join(filters)

    def group(self, alias: str, code: str | None = None) -> str:
        """The group value of a row: a column of devices (alias d) or kpi_incidents (alias i),
        the fault code, or NULL (whole fleet, week, month)."""
        group_by = self.spec.group_by
        if group_by in _DEVICE_COLUMN:
            return f"{alias}.{_DEVICE_COLUMN[group_by]}"
        if group_by is GroupBy.FAULT_CODE and code is not None:
            return code
        return "NULL"

    def code_filter(self, column: str) -> str:
        """Rows of kpi_incidents (alias of ``column``) the filters keep: the device's customer,
        site and model at the incident's time, and the fault code."""
        return f" AND {column.split('.', maxsplit=1)[0]}.kept = 1" + self.fault_filter(column)

    def fault_filter(self, column: str) -> str:
        return f" AND {column} = :f_code" if self.spec.fault_code is not None else ""

    def full_months(self) -> list[tuple[float, float, int]]:
        """The UTC months [ms, me) that lie whole in one bucket, with its index (contiguous:
        the buckets tile P)."""
        out: list[tuple[float, float, int]] = []
        ms = month_start(self.period.t0)
        while ms < self.period.te:
            me = next_month_start(ms)
            b = next((c.index for c in self.cuts if c.start <= ms and me <= c.end), None)
            if b is not None:
                out.append((ms, me, b))
            ms = me
        return out


@dataclass(frozen=True, slots=True)
class RolledMonths:
    """The UTC months [lo, hi) whose resolved incidents the incident rollups served, set by
    :func:`server.kpi.incident_months.resolved_rolled`; the incident phases read the rest raw."""

    lo: float
    hi: float
    unserved: bool  # kpi_unserved lists devices (or months) read raw inside [lo, hi)
    minus: tuple[tuple[float, float], ...]  # parts of extended months outside P (sign -1)


@dataclass(slots=True)
class Accumulator:
    """What the phases find: the aggregates of each report row, and what later phases need
    from earlier ones (column bounds, the rolled-up months and their percentile populations,
    the calendars' prefix sums), with each step's time."""

    with_state: bool
    rows: dict[RowKey, RowAggregates] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    bounds: dict[str, Bounds] = field(default_factory=dict)
    rolled: RolledMonths | None = None
    populations: dict[Population, list[npt.NDArray[np.float64]]] = field(default_factory=dict)
    # the rolled-up months' restore times of failure episodes, per report row (MTRS per episode)
    episode_restores: dict[tuple[Any, int], list[npt.NDArray[np.float64]]] = field(default_factory=dict)
    schedules: dict[int, Schedule] | None = None

    def row(self, key: Any, index: int) -> RowAggregates:
        """The aggregates of report row (key, bucket index), created empty on first use."""
        if (key, index) not in self.rows:
            self.rows[key, index] = RowAggregates(state=StateTotals() if self.with_state else None)
        return self.rows[key, index]

    def state(self, key: Any, index: int) -> StateTotals:
        state = self.row(key, index).state
        if state is None:
            raise RuntimeError("state totals asked for in a report without state KPIs (a fault-code report)")
        return state

    def params(self) -> dict[str, Any]:
        """The parameters earlier phases add: the rolled-up months' bounds (``m_lo``, ``m_hi``)."""
        return {} if self.rolled is None else {"m_lo": self.rolled.lo, "m_hi": self.rolled.hi}


def statement(sql: str, params: dict[str, Any]) -> TextClause:
    """``text(sql)`` with the types the parameters need: ``*_dt`` are UTC datetimes, lists are
    expanded (``IN :name``)."""
    clause = text(sql)
    for key, value in params.items():
        if not re.search(rf":{key}\b", sql):
            continue
        if key.endswith("_dt"):
            clause = clause.bindparams(bindparam(key, type_=UtcDateTime))
        elif isinstance(value, list | tuple):
            clause = clause.bindparams(bindparam(key, expanding=True))
    return clause


async def fetch(ctx: ReportContext, acc: Accumulator, name: str, sql: str, **extra: Any) -> Sequence[Any]:
    """Run a query with the report's parameters (and ``extra``); its time is step ``name``."""
    started = time.perf_counter()
    rows = await select_rows(ctx, acc, sql, **extra)
    acc.timings[name] = time.perf_counter() - started
    return rows


async def select_rows(ctx: ReportContext, acc: Accumulator, sql: str, **extra: Any) -> Sequence[Any]:
    """Run a query with the report's parameters (and ``extra``), untimed."""
    params = {**ctx.params, **acc.params(), **extra}
    return (await ctx.session.execute(statement(sql, params), params)).all()


async def execute(ctx: ReportContext, acc: Accumulator, sql: str, **extra: Any) -> None:
    """Run a statement that returns no rows with the report's parameters (and ``extra``)."""
    params = {**ctx.params, **acc.params(), **extra}
    await ctx.session.execute(statement(sql, params), params)


def through_end(acc: Accumulator, key: str, start_bound: float, end_bound: float) -> bool:
    """Find rows with start < start_bound and end > end_bound through their end (true) or
    through their start, whichever range the column bounds say is narrower."""
    bounds = acc.bounds.get(key)
    if bounds is None:
        return True
    start_lo, start_hi, end_lo, end_hi = bounds
    return share_above(end_lo, end_hi, end_bound) <= share_below(start_lo, start_hi, start_bound)
