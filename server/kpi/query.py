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
"""

# SQL here is assembled from fixed fragments of this module; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import json
import logging
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Channel, Customer, Site
from server.db.types import UtcDateTime
from server.kpi.calendar import (
    Bucket,
    ContractHours,
    Schedule,
    buckets,
    contract_windows,
    parse_contract_hours,
    to_datetime,
)
from server.kpi.definitions import HIT_RANK, REPEAT_WINDOW_S
from server.kpi.incident_rollups import decode, month_start, next_month_start, next_year_start, year_start
from server.kpi.intervals import array_percentiles, multiset_difference
from server.kpi.records import APPLIED
from server.kpi.report import (
    DEVICE_GROUPS,
    DurationSummary,
    GroupBy,
    Names,
    Period,
    Report,
    ReportSpec,
    RowAggregates,
    RowKey,
    StateTotals,
    assemble,
)
from server.kpi.rollups import hours_key
from server.kpi.sql import (
    CAL_24X7,
    DAY,
    OPEN_END,
    SLOTS,
    Dialect,
    create_temporary_tables,
    empty_temporary_tables,
    fill_days,
    share_above,
    share_below,
)

__all__ = ["compute_report"]

logger = logging.getLogger(__name__)

_METRICS = ("mtrs", "mtta", "mttrespond", "mttresolve", "open_age")
_KNOWN_STATES = "('down', 'maintenance', 'running', 'degraded')"
_DEVICE_COLUMN = {GroupBy.CUSTOMER: "customer_id", GroupBy.SITE: "site_id", GroupBy.MODEL: "model"}
Bounds = tuple[float, float, float, float]


class _Query:
    def __init__(
        self,
        session: AsyncSession,
        spec: ReportSpec,
        period: Period,
        cuts: list[Bucket],
        *,
        rollups: bool = True,
        hours_keys: dict[int, str] | None = None,
    ) -> None:
        self.session = session
        self.rollups = rollups
        self.hours_keys = hours_keys or {}
        self.part = ""  # the devices_cte restriction: "" all, "rolled" or "raw" (see state_time)
        self.spec = spec
        self.period = period
        self.cuts = cuts
        self.d = Dialect(session.get_bind().dialect.name)
        self.params: dict[str, Any] = {
            "t0": period.t0,
            "te": period.te,
            "repeat": REPEAT_WINDOW_S,
            "be_min": cuts[0].end if cuts else period.te,
            "baseline": spec.baseline_restore_s,
        }
        filters = ["1 = 1"]
        for name, column in (("customer", "p.customer_id"), ("site", "p.site_id"), ("model", "p.model")):
            if getattr(spec, name) is not None:
                filters.append(f"{column} = :f_{name}")
                self.params[f"f_{name}"] = getattr(spec, name)
        self.piece_filter = " AND ".join(filters)  # on kpi_pieces p: the customer/site at the time
        if spec.fault_code is not None:
            self.params["f_code"] = spec.fault_code
        self.rows: dict[RowKey, RowAggregates] = {}
        # incident rollups: the UTC months [m_lo, m_hi) whose resolved incidents were read
        # from kpi_incident_months (except kpi_unserved), and their percentile populations
        self.incident_rollups = (
            rollups and spec.fault_code is None and spec.group_by is not GroupBy.FAULT_CODE
        )
        self.rolled_months: tuple[float, float] | None = None
        self.unserved = False
        self.populations: dict[tuple[Any, int, int], list[npt.NDArray[np.float64]]] = {}
        self.timings: dict[str, float] = {}
        self.bounds: dict[str, Bounds] = {}
        self.days_filled = False
        self._schedules: dict[int, Schedule] | None = None
        self.minus: list[tuple[float, float]] = []  # parts of extended months outside P

    # --- helpers -------------------------------------------------------------------------

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

    def row(self, key: Any, index: int) -> RowAggregates:
        if (key, index) not in self.rows:
            self.rows[key, index] = RowAggregates(state=StateTotals() if self.spec.with_state else None)
        return self.rows[key, index]

    async def fetch(self, name: str, sql: str, **extra: Any) -> Sequence[Any]:
        started = time.perf_counter()
        statement = text(sql)
        params = {**self.params, **extra}
        for key in params:
            if key.endswith("_dt"):
                statement = statement.bindparams(bindparam(key, type_=UtcDateTime))
        result = (await self.session.execute(statement, params)).all()
        self.timings[name] = time.perf_counter() - started
        return result

    async def load_bounds(self) -> None:
        """Column ranges (one index lookup each) from which the access paths are chosen."""
        for key, table, low, high in (
            ("states", "state_intervals", "start_s", "end_s"),
            ("open", "incidents", "detect_s", "resolved_s"),
            ("spanning", "incidents", "fault_s", "restored_s"),
        ):
            parts = [f"(SELECT {fn}({col}) FROM {table})" for col in (low, high) for fn in ("MIN", "MAX")]
            row = (await self.session.execute(text("SELECT " + ", ".join(parts)))).one()
            if None not in row:
                self.bounds[key] = (row[0], row[1], row[2], row[3])

    def through_end(self, key: str, start_bound: float, end_bound: float) -> bool:
        """Find rows with start < start_bound and end > end_bound through their end (true) or
        through their start, whichever range the column bounds say is narrower."""
        bounds = self.bounds.get(key)
        if bounds is None:
            return True
        start_lo, start_hi, end_lo, end_hi = bounds
        return share_above(end_lo, end_hi, end_bound) <= share_below(start_lo, start_hi, start_bound)

    async def load_pieces(self) -> None:
        """kpi_pieces: every device's customer/site periods (docs/kpis.md, "customer at the
        time"): a recorded period lasts until the device's next one and the first reaches back
        to the beginning; a device without any has its current customer/site throughout.
        ``kept``: the filters keep the period; ``model_kept``: they keep the device."""
        d = self.d
        decommissioned = f"COALESCE({d.epoch('d.decommissioned_at')}, {OPEN_END})"
        model = "d.model = :f_model" if self.spec.model is not None else "1 = 1"
        sql = f"""
            INSERT INTO kpi_pieces
            SELECT p.device_id, p.customer_id, p.site_id, p.model, p.pf, p.pt, p.dec_s,
                   CASE WHEN {self.piece_filter} THEN 1 ELSE 0 END, p.model_kept
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
        await self.session.execute(text(sql), self.params)
        if d.pg:
            await self.session.execute(text("ANALYZE kpi_pieces"))
        self.timings["pieces"] = time.perf_counter() - started

    async def ensure_days(self, calendars: dict[int, ContractHours]) -> None:
        """kpi_days rows of every calendar over P (for the raw state paths), once."""
        if self.days_filled or not calendars:
            return
        self.days_filled = True
        started = time.perf_counter()
        await fill_days(
            self.session,
            self.d,
            [(cal, hours, self.period.t0, self.period.te) for cal, hours in calendars.items()],
        )
        self.timings["days"] = time.perf_counter() - started

    # --- rows that exist even when empty -------------------------------------------------

    async def keys(self) -> None:
        group_by = self.spec.group_by
        if group_by is None or group_by.is_time:
            for bucket in self.cuts:
                self.row(None, bucket.index)
        elif group_by in DEVICE_GROUPS:
            sql = f"SELECT DISTINCT {self.group('p')} FROM kpi_pieces p WHERE p.kept = 1 AND p.pf < :te AND p.pt > :t0"
            for (g,) in await self.fetch("keys", sql):
                self.row(g, 0)

    # --- equipment state ------------------------------------------------------------------

    def devices_cte(self, calendars: dict[int, ContractHours]) -> str:
        cal = (
            f"CASE WHEN p.customer_id IN ({', '.join(str(int(c)) for c in calendars)}) "
            f"THEN p.customer_id ELSE {CAL_24X7} END"
            if calendars
            else str(CAL_24X7)
        )
        # a piece of a device whose rollup is up to date is read from kpi_state_segments: by
        # prefix sums (24x7, "rolled") or segment by segment (contract hours, "contract")
        clean = "NOT EXISTS (SELECT 1 FROM kpi_rollup_dirty r WHERE r.device_id = p.device_id)"
        part = {
            "": "",
            "rolled": f" AND {cal} = {CAL_24X7} AND {clean}",
            "contract": f" AND {cal} <> {CAL_24X7} AND {clean}",
            "raw": f" AND NOT {clean}",
        }[self.part]
        # one row per device and customer/site period: owned over [pf, dec_s), the period cut
        # at decommissioning, with its customer's calendar
        return f"""
            dv AS {self.d.materialized}(
                SELECT p.device_id, {self.group("p")} AS g, {cal} AS cal, p.pf, {self.d.least("p.pt", "p.dec_s")} AS dec_s
                FROM kpi_pieces p
                WHERE p.kept = 1 AND p.pf < :te AND p.pt > :t0 AND p.pf < p.dec_s{part}
            )"""

    def schedules(self, calendars: dict[int, ContractHours]) -> dict[int, Schedule]:
        """Each calendar's scheduled time over P as prefix sums; customers with the same
        contract hours share one (contract windows cost a time-zone conversion a day)."""
        if self._schedules is None:
            by_hours: dict[ContractHours, Schedule] = {}
            self._schedules = {}
            for cal, hours in calendars.items():
                if hours not in by_hours:
                    by_hours[hours] = Schedule(contract_windows(hours, self.period.t0, self.period.te))
                self._schedules[cal] = by_hours[hours]
        return self._schedules

    async def required_time(self, calendars: dict[int, ContractHours]) -> None:
        """Required time per row: each device piece's scheduled time in each bucket, from the
        calendar's prefix sums (:class:`~server.kpi.calendar.Schedule`). Pieces with the same
        row, calendar and bounds are counted together; a device counts once per row."""
        g, lt = self.d.greatest, self.d.least
        sql = f"""
            WITH {self.devices_cte(calendars)}
            SELECT dv.device_id, dv.g, dv.cal, {g("dv.pf", ":t0")}, {lt("dv.dec_s", ":te")} FROM dv
        """
        rows = await self.fetch("required", sql)
        started = time.perf_counter()
        schedules = self.schedules(calendars)
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
        ends = [bucket.end for bucket in self.cuts]

        def shares(cal: int, lo: float, hi: float) -> Iterator[tuple[int, float]]:
            schedule = schedules.get(cal)
            for bucket in self.cuts[bisect_right(ends, lo) :]:
                if bucket.start >= hi:
                    break
                a, e = max(lo, bucket.start), min(hi, bucket.end)
                share = e - a if schedule is None else schedule.between(a, e)
                if share > 0:
                    yield bucket.index, share

        for (g_, cal, lo, hi), n in together.items():
            for b, share in shares(cal, lo, hi):
                state = self.row(g_, b).state
                assert state is not None
                state.devices += n
                state.required += share * n
        counted: set[tuple[str, Any, int]] = set()
        for device_id, g_, cal, lo, hi in alone:
            for b, share in shares(cal, lo, hi):
                state = self.row(g_, b).state
                assert state is not None
                if (device_id, g_, b) not in counted:
                    counted.add((device_id, g_, b))
                    state.devices += 1
                state.required += share
        self.timings["required"] += time.perf_counter() - started

    def overlapping(self, columns: str, states: str) -> str:
        """Intervals overlapping [t0, te) in ``states``, through whichever covering index
        (end_s, start_s, ...) or (start_s, end_s, ...) reads fewer entries."""
        d = self.d
        if self.part == "raw":  # the few devices the rollups do not serve: through their own index
            return f"""
                SELECT {columns} FROM state_intervals s
                WHERE s.device_id IN (SELECT device_id FROM dv) AND {d.hide("s.start_s")} < :te
                  AND ({d.hide("s.end_s")} > :t0 OR s.end_s IS NULL) AND {states}"""
        if self.through_end("states", self.period.te, self.period.t0):
            return f"""
                SELECT {columns} FROM state_intervals s
                WHERE s.end_s > :t0 AND {d.hide("s.start_s")} < :te AND {states}
                UNION ALL
                SELECT {columns} FROM state_intervals s
                WHERE s.end_s IS NULL AND {d.hide("s.start_s")} < :te AND {states}"""
        return f"""
                SELECT {columns} FROM state_intervals s
                WHERE s.start_s < :te AND ({d.hide("s.end_s")} > :t0 OR s.end_s IS NULL) AND {states}"""

    def pieces(self) -> str:
        """The known-state pieces overlapping [t0, te) with their precedence level: every
        interval up to its planned end, and every maintenance overrun (down)."""
        d = self.d
        g, lt = d.greatest, d.least
        end = f"COALESCE(s.end_s, {OPEN_END})"
        pe = d.epoch("s.planned_end")
        level = (
            "CASE WHEN s.state = 'down' THEN (CASE WHEN s.external THEN 2 ELSE 1 END) "
            "WHEN s.state = 'maintenance' THEN 3 ELSE 4 END"
        )
        cut = f"CASE WHEN s.state = 'maintenance' AND s.planned_end IS NOT NULL THEN {lt(end, pe)} ELSE {end} END"
        overrun = f"s.device_id, {g('s.start_s', pe)} AS s, {end} AS e, CASE WHEN s.external THEN 2 ELSE 1 END AS lvl"
        return (
            self.overlapping(
                f"s.device_id, s.start_s AS s, {cut} AS e, {level} AS lvl",
                f"{d.hide('s.state')} IN {_KNOWN_STATES}",
            )
            + "\n                UNION ALL"
            + self.overlapping(
                overrun, f"{d.hide('s.state')} = 'maintenance' AND s.planned_end IS NOT NULL AND {pe} < {end}"
            )
        )

    def day(self, x: str) -> str:
        """The UTC day number of epoch seconds ``x`` (>= 0)."""
        return f"CAST(floor({x} / {DAY}) AS BIGINT)" if self.d.pg else f"CAST({x} / {DAY} AS INTEGER)"

    def scheduled_in_day(self, alias: str, x: str) -> str:
        """C(x) from x's kpi_days row ``alias``: scheduled time before the day + the day's
        scheduled pieces before x."""
        g, lt = self.d.greatest, self.d.least
        pieces = " + ".join(g("0", f"{lt(x, f'{alias}.w{k}e')} - {alias}.w{k}s") for k in range(1, SLOTS + 1))
        return f"{alias}.cum + {pieces}"

    def scheduled_before(self, x: str, alias: str | None = None) -> str:
        """C(x): scheduled time of the row's calendar before ``x`` (24x7: x itself), from the
        joined kpi_days row ``alias``, or looked up."""
        if alias is not None:
            contract = self.scheduled_in_day(alias, x)
        else:
            contract = (
                f"(SELECT {self.scheduled_in_day('kd', x)} FROM kpi_days kd "
                f"WHERE kd.cal = wn.cal AND kd.day = {self.day(x)})"
            )
        return f"(CASE WHEN wn.cal = {CAL_24X7} THEN {x} ELSE {contract} END)"

    async def state_time(self, calendars: dict[int, ContractHours]) -> None:
        """Nested unions per device and bucket, in one pass; with no contract hours in scope,
        plain arithmetic, else each share's scheduled part through C(x)."""
        contract = bool(calendars)
        g = self.d.greatest
        maxima = ",\n".join(f"MAX(CASE WHEN lvl <= {k} THEN e END) OVER win AS m{k}" for k in (1, 2, 3, 4))
        # the row's share at level k is [a_k, e), a_k = max(s, M_k), when non-empty
        starts = {k: g("wn.s", f"COALESCE(wn.m{k}, wn.s)") for k in (1, 2, 3, 4)}
        if contract:  # scheduled part: C(e) - C(a_k), and C(a_k) is C(s) unless an earlier row overlaps
            shares = ",\n".join(
                f"CASE WHEN wn.lvl <= {k} AND wn.e > {starts[k]} THEN "
                f"(CASE WHEN wn.m{k} IS NULL OR wn.m{k} <= wn.s THEN -1 "
                f"ELSE {self.scheduled_before(f'wn.m{k}')} END) END AS c{k}"
                for k in (1, 2, 3, 4)
            )
            contributions = ",\n".join(
                f"SUM(CASE WHEN sg.c{k} IS NULL THEN 0 WHEN sg.c{k} = -1 THEN sg.ce - sg.cs "
                f"ELSE sg.ce - sg.c{k} END) AS u{k}"
                for k in (1, 2, 3, 4)
            )
            tail = f""",
            sg AS (
                SELECT wn.g, wn.b, {self.scheduled_before("wn.s", "ds")} AS cs,
                       {self.scheduled_before("wn.e", "de")} AS ce,
                       {shares}
                FROM wn
                LEFT JOIN kpi_days ds ON ds.cal = wn.cal AND ds.day = {self.day("wn.s")}
                LEFT JOIN kpi_days de ON de.cal = wn.cal AND de.day = {self.day("wn.e")}
            )
            SELECT sg.g, sg.b,
                   {contributions}
            FROM sg GROUP BY sg.g, sg.b"""
        else:
            contributions = ",\n".join(
                f"SUM(CASE WHEN wn.lvl <= {k} AND wn.e > {starts[k]} THEN wn.e - {starts[k]} ELSE 0 END) AS u{k}"
                for k in (1, 2, 3, 4)
            )
            tail = f"""
            SELECT wn.g, wn.b,
                   {contributions}
            FROM wn GROUP BY wn.g, wn.b"""
        if self.rollups:
            dirty = bool(await self.fetch("dirty", "SELECT 1 FROM kpi_rollup_dirty LIMIT 1"))
            await self.state_rolled(calendars)
            if calendars:
                await self.state_contract(calendars)
                await self.state_segments(calendars)
            if not dirty:
                return
            self.part = "raw"  # the rest: devices whose rollup is stale
        await self.ensure_days(calendars)
        try:
            if not await self.overlaps(calendars):
                await self.state_sum(calendars)
                return
            await self.state_union(calendars, tail, maxima)
        finally:
            self.part = ""

    async def state_union(self, calendars: dict[int, ContractHours], tail: str, maxima: str) -> None:
        g, lt = self.d.greatest, self.d.least
        sql = f"""
            WITH {self.devices_cte(calendars)},
            pc AS ({self.pieces()}
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
        self.add_state(await self.fetch("state", sql))

    def add_state(self, rows: Sequence[Any]) -> None:
        for g_, b, u1, u2, u3, u4 in rows:
            state = self.row(g_, b).state
            assert state is not None
            state.down += u1 or 0.0
            state.down_or_external += u2 or 0.0
            state.not_up += u3 or 0.0
            state.known += u4 or 0.0

    async def state_rolled(self, calendars: dict[int, ContractHours]) -> None:
        """State time of the 24x7 pieces of devices with an up-to-date rollup
        (:mod:`server.kpi.rollups`): per piece and bucket [a, e), C_k(e) - C_k(a) from the
        segments holding a and e (none: before the device's first interval, 0)."""
        g, lt = self.d.greatest, self.d.least

        def seg(x: str) -> str:
            return (
                f"(SELECT s.start_s FROM kpi_state_segments s WHERE s.device_id = rg.device_id "
                f"AND s.start_s <= rg.{x} ORDER BY s.start_s DESC LIMIT 1)"
            )

        def cum(alias: str, x: str, k: int) -> str:
            return f"COALESCE({alias}.c{k} + CASE WHEN {alias}.lvl <= {k} THEN lk.{x} - {alias}.start_s ELSE 0 END, 0)"

        sums = ",\n".join(f"SUM({cum('ze', 'e', k)} - {cum('za', 'a', k)}) AS u{k}" for k in (1, 2, 3, 4))
        self.part = "rolled"
        try:
            sql = f"""
                WITH {self.devices_cte(calendars)},
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
            self.add_state(await self.fetch("state_rolled", sql))
        finally:
            self.part = ""

    async def overlaps(self, calendars: dict[int, ContractHours]) -> bool:
        """Whether two intervals of one device overlap in [t0, te): never for the incidents
        writer's intervals (docs/incidents.md), which makes their union a plain sum. One index
        probe (device_id, start_s) per interval in the period (of the raw devices only, when
        the rollups serve the rest)."""
        rows = self.overlapping(
            "s.device_id, s.start_s, s.end_s, s.id",
            "EXISTS (SELECT 1 FROM state_intervals o WHERE o.device_id = s.device_id"
            f" AND o.start_s >= s.start_s AND o.start_s < COALESCE(s.end_s, {OPEN_END})"
            " AND o.start_s < :te AND o.id <> s.id AND (o.end_s IS NULL OR o.end_s > o.start_s))",
        )
        devices = f"WITH {self.devices_cte(calendars)}\n" if self.part == "raw" else ""
        return bool(await self.fetch("overlaps", f"{devices}SELECT 1 FROM ({rows}\n) ov LIMIT 1"))

    async def state_sum(self, calendars: dict[int, ContractHours]) -> None:
        """State time when no two intervals of a device overlap: the pieces are disjoint, so
        each level's union is the sum of its clipped pieces (contract hours: C(e) - C(s))."""
        g, lt = self.d.greatest, self.d.least
        await self.sum_levels(
            "state",
            calendars,
            f"""{self.devices_cte(calendars)},
            pc AS ({self.pieces()}
            ),
            wn AS (
                SELECT dv.g, dv.cal, kb.b, pc.lvl,
                       {g("pc.s", "kb.bs", "dv.pf")} AS s, {lt("pc.e", "kb.be", "dv.dec_s")} AS e
                FROM pc
                JOIN dv ON dv.device_id = pc.device_id AND pc.s < dv.dec_s AND pc.e > dv.pf
                JOIN kpi_buckets kb ON kb.bs < pc.e AND kb.be > pc.s
            )""",
        )

    async def state_contract(self, calendars: dict[int, ContractHours]) -> None:
        """State time of the contract-hours pieces of devices with an up-to-date rollup, for
        their whole UTC months in P when ``kpi_contract_months`` serves every one of them (same
        customer, same contract hours); the rest of each piece — its partial months at the
        ends, or all of it — goes to kpi_state_raw for :meth:`state_segments`. One pass: a row
        per piece and bucket with its served and whole months."""
        g, lt = self.d.greatest, self.d.least
        months = self.full_months()
        self.part = "contract"
        try:
            started = time.perf_counter()
            if months and self.hours_keys:
                await self.session.execute(
                    text("INSERT INTO kpi_months (ms, me, b) VALUES (:ms, :me, :b)"),
                    [{"ms": ms, "me": me, "b": b} for ms, me, b in months],
                )
                await self.session.execute(
                    text("INSERT INTO kpi_calendars (cal, hkey) VALUES (:cal, :hkey)"),
                    [{"cal": cal, "hkey": key} for cal, key in self.hours_keys.items() if cal in calendars],
                )
            lo, hi = g(":t0", "dv.pf"), lt(":te", "dv.dec_s")
            sql = f"""
                WITH {self.devices_cte(calendars)}
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
            for row in await self.session.execute(text(sql), self.params):
                pieces.setdefault((row[0], row[1]), []).append(row)
            raw: list[dict[str, Any]] = []
            for (device_id, pf), rows in pieces.items():
                piece_lo, piece_hi = rows[0][4], rows[0][5]
                if not all(0 < r[6] == r[7] for r in rows):  # a whole month not served: all raw
                    raw.append({"d": device_id, "pf": pf, "lo": piece_lo, "hi": piece_hi})
                    continue
                self.add_state([(r[2], r[3], *r[10:14]) for r in rows])
                first, last = min(r[8] for r in rows), max(r[9] for r in rows)
                raw += [
                    {"d": device_id, "pf": pf, "lo": a, "hi": e}
                    for a, e in ((piece_lo, first), (last, piece_hi))
                    if a < e
                ]
            if raw:
                await self.session.execute(
                    text("INSERT INTO kpi_state_raw (device_id, pf, lo, hi) VALUES (:d, :pf, :lo, :hi)"), raw
                )
                if self.d.pg:
                    await self.session.execute(text("ANALYZE kpi_state_raw"))
            self.timings["state_contract"] = time.perf_counter() - started
        finally:
            self.part = ""

    async def state_segments(self, calendars: dict[int, ContractHours]) -> None:
        """State time of the ranges in kpi_state_raw (contract-hours pieces of devices with an
        up-to-date rollup, but for their served months): their segments (disjoint by
        construction, a segment ends where the next begins) cut at the range and the buckets,
        each counting its scheduled time from the calendar's prefix sums — the segment holding
        the range's start, then every segment starting before its end (index ranges on
        (device_id, start_s))."""
        g, lt = self.d.greatest, self.d.least
        self.part = "contract"
        try:
            sql = f"""
                WITH {self.devices_cte(calendars)},
                hd AS {self.d.materialized}(
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
            rows = await self.fetch("state_segments", sql)
            started = time.perf_counter()
            schedules = self.schedules(calendars)
            totals: dict[tuple[Any, int, int], float] = {}
            for g_, cal, b, lvl, a, e in rows:
                key = (g_, b, lvl)
                totals[key] = totals.get(key, 0.0) + schedules[cal].between(a, e)
            self.add_levels(totals)
            self.timings["state_segments"] += time.perf_counter() - started
        finally:
            self.part = ""

    def add_levels(self, totals: dict[tuple[Any, int, int], float]) -> None:
        """Add (row, bucket, level) totals: a level-k piece counts at level k and every coarser
        one (down ⊆ down or external ⊆ not up ⊆ known)."""
        for (g_, b, lvl), total in totals.items():
            state = self.row(g_, b).state
            assert state is not None
            if lvl <= 1:
                state.down += total
            if lvl <= 2:
                state.down_or_external += total
            if lvl <= 3:
                state.not_up += total
            state.known += total

    async def sum_levels(self, name: str, calendars: dict[int, ContractHours], ctes: str) -> None:
        """Sum the disjoint pieces ``wn (g, cal, b, lvl, s, e)`` that ``ctes`` ends with, per row
        and level; a level-k piece counts at level k and every coarser one."""
        if calendars:
            length = f"{self.scheduled_before('wn.e', 'de')} - {self.scheduled_before('wn.s', 'ds')}"
            days = f"""
                LEFT JOIN kpi_days ds ON ds.cal = wn.cal AND ds.day = {self.day("wn.s")}
                LEFT JOIN kpi_days de ON de.cal = wn.cal AND de.day = {self.day("wn.e")}"""
        else:
            length, days = "wn.e - wn.s", ""
        sql = f"""
            WITH {ctes}
            SELECT wn.g, wn.b, wn.lvl, SUM({length})
            FROM wn{days}
            WHERE wn.e > wn.s
            GROUP BY wn.g, wn.b, wn.lvl
        """
        self.add_levels({(g_, b, lvl): total or 0.0 for g_, b, lvl, total in await self.fetch(name, sql)})

    # --- incidents ------------------------------------------------------------------------

    async def load_incidents(self) -> None:
        """Every incident a KPI of this report can touch, read once into kpi_incidents:
        resolved, opened, failed or still open in P, or a failure reaching into P. Each branch
        is an index range; the planners read each row once (SQLite's multi-index OR, PostgreSQL's
        BitmapOr). With months rolled up (:meth:`resolved_rolled`) only the raw ranges are
        read — the partial months at P's edges, plus what is still open — and the devices the
        rollups do not serve are read whole."""
        d = self.d
        fault = d.least("i.fault_s", "i.detect_s")
        te, be = self.period.te, self.params["be_min"]
        if self.through_end("open", te, be):
            still_open = f"i.resolved_s >= :be_min AND {d.hide('i.detect_s')} < :te"
        else:
            still_open = f"i.detect_s < :te AND {d.hide('i.resolved_s')} >= :be_min"
        branches = [
            still_open,
            "i.resolved_s IS NULL",
        ]  # open: at a bucket's end, or a failure without an end
        ranges = []
        for k, (low, high) in enumerate(self.raw_ranges()):
            self.params[f"raw{k}_lo"], self.params[f"raw{k}_hi"] = low, high
            ranges.append((f":raw{k}_lo", f":raw{k}_hi"))
        for lo, hi in ranges:
            branches += [
                f"i.{column} >= {lo} AND i.{column} < {hi}"
                for column in ("resolved_s", "detect_s", "fault_s")
            ]
            if self.rolled_months is not None:
                continue  # episodes check earlier failures in the incidents table
            start = self.params[lo[1:]]
            if self.through_end("spanning", start, start):  # a failure's end after the range's start
                branches += [
                    f"i.restored_s > {lo}",
                    f"i.resolved_s > {lo} AND {d.hide('i.restored_s')} IS NULL",
                ]
            else:  # a failure's start before it
                branches += [f"i.fault_s < {lo}", f"i.detect_s < {lo}"]
        failure = "i.effect = 'down' AND NOT i.external"
        anywhere = "\n                   OR ".join(f"({branch})" for branch in branches)
        insert = f"""
            INSERT INTO kpi_incidents
            SELECT i.id, i.device_id, p.customer_id, p.site_id, p.model, i.fault_code,
                   CASE WHEN {failure} THEN 1 ELSE 0 END, {fault}, i.detect_s, i.ack_s, i.respond_s,
                   i.restored_s, i.resolved_s, i.channel, CASE WHEN i.needs_dispatch THEN 1 ELSE 0 END,
                   CASE WHEN i.remote_used THEN 1 ELSE 0 END, i.visits, COALESCE(c.cost_per_dispatch, 0),
                   p.kept
            FROM incidents i
            JOIN kpi_pieces p ON p.device_id = i.device_id AND p.pf <= {fault} AND {fault} < p.pt
            LEFT JOIN customers c ON c.id = p.customer_id
            WHERE p.model_kept = 1 AND """
        started = time.perf_counter()
        await self.session.execute(text(f"{insert}({anywhere})"), self.params)
        if self.unserved:  # every incident of these devices (a superset: each step bounds its rows)
            await self.session.execute(
                text(
                    f"{insert}i.device_id IN (SELECT device_id FROM kpi_unserved)"
                    " AND i.id NOT IN (SELECT k.id FROM kpi_incidents k)"
                ),
                self.params,
            )
        if d.pg:
            await self.session.execute(text("ANALYZE kpi_incidents"))
        self.timings["incidents"] = time.perf_counter() - started

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

    def incident_months(self) -> list[tuple[float, float, int]]:
        """The UTC months the incident rollups serve: the whole ones in one bucket, and — for a
        report of one bucket — a partial month at either end of P that lies mostly inside P,
        its part outside P subtracted (``minus``): what lies outside is read raw with sign -1
        (kpi_ibuckets), cheaper than reading what lies inside."""
        months = self.full_months()
        self.minus = []
        if len(self.cuts) != 1 or not self.cuts[0].end > self.cuts[0].start:
            return months
        t0, te = self.period.t0, self.period.te
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
                self.minus += [
                    (lo, hi) for lo, hi in ((ms, t0), (te, me)) if lo < hi and ms <= lo and hi <= me
                ]
        return sorted(months)

    def signed(self, column: str, device: str = "i.device_id") -> str:
        """The rows of an incident step joined to kpi_ibuckets (kb): in P and read raw (sign
        +1), or in a subtracted part of an extended month and served by the rollup (sign -1)."""
        raw = self.raw(column, device)
        return f"((kb.sgn = 1 AND {raw}) OR (kb.sgn = -1 AND NOT {raw}))"

    def raw(self, column: str, device: str = "i.device_id") -> str:
        """Whether a row attributed to time ``column`` of ``device`` is read raw: outside the
        rolled-up months, or in a month of a device the rollups do not serve (kpi_unserved)."""
        if self.rolled_months is None:
            return "1 = 1"
        unserved = (
            f" OR ({device} IN (SELECT device_id FROM kpi_unserved) AND EXISTS (SELECT 1 FROM"
            f" kpi_unserved u WHERE u.device_id = {device} AND u.ms <= {column} AND {column} < u.me))"
            if self.unserved
            else ""
        )
        return f"({column} < :m_lo OR {column} >= :m_hi{unserved})"

    async def resolved_rolled(self) -> None:
        """The ``resolved`` aggregates and percentile populations of the incidents resolved in
        the whole UTC months of P, from kpi_incident_months (:mod:`server.kpi.incident_rollups`):
        one row per device and month, taken when the device's rollup is current and the
        month's incidents (their clamped t_fault in [lo_s, hi_s]) lie in one customer/site
        period. The rest — partial months, dirty devices, months straddling a move, and fault
        code reports — are read raw by :meth:`resolved` (see :meth:`signed`)."""
        if not self.incident_rollups:
            return
        months = self.incident_months()
        if not months:
            return
        started = time.perf_counter()
        if self.minus:
            await self.session.execute(
                text("INSERT INTO kpi_ibuckets (b, bs, be, sgn) VALUES (0, :bs, :be, -1)"),
                [{"bs": lo, "be": hi} for lo, hi in self.minus],
            )
        self.params["m_lo"], self.params["m_hi"] = months[0][0], months[-1][1]
        bucket_of = {ms: b for ms, _, b in months}
        # read raw: dirty devices entirely, and a moved device's months that straddle a move
        await self.session.execute(
            text(
                f"""
                INSERT INTO kpi_unserved
                SELECT device_id, -{OPEN_END}, {OPEN_END} FROM kpi_incident_dirty
                UNION ALL
                SELECT r.device_id, r.month_s, r.month_s + 1 FROM kpi_incident_months r
                WHERE r.month_s >= :m_lo AND r.month_s < :m_hi
                  AND r.device_id IN (SELECT device_id FROM kpi_pieces GROUP BY device_id HAVING COUNT(*) > 1)
                  AND NOT EXISTS (SELECT 1 FROM kpi_pieces p WHERE p.device_id = r.device_id
                                  AND p.pf <= r.lo_s AND r.hi_s < p.pt)
                  AND NOT EXISTS (SELECT 1 FROM kpi_incident_dirty x WHERE x.device_id = r.device_id)
                """
            ),
            self.params,
        )
        # a straddling month's row was marked [month_s, month_s + 1): widen it to the month
        straddling = (
            await self.session.execute(text(f"SELECT device_id, ms FROM kpi_unserved WHERE ms > -{OPEN_END}"))
        ).all()
        if straddling:
            await self.session.execute(text(f"DELETE FROM kpi_unserved WHERE ms > -{OPEN_END}"))
            await self.session.execute(
                text("INSERT INTO kpi_unserved VALUES (:d, :ms, :me)"),
                [{"d": d, "ms": ms, "me": next_month_start(ms)} for d, ms in straddling],
            )
        self.unserved = bool((await self.session.execute(text("SELECT 1 FROM kpi_unserved LIMIT 1"))).first())
        self.timings["unserved"] = time.perf_counter() - started
        started = time.perf_counter()
        self.rolled_months = (self.params["m_lo"], self.params["m_hi"])
        await self.rolled_rows(bucket_of)
        self.timings["resolved_rolled"] = time.perf_counter() - started

    @staticmethod
    def whole_years(bucket_of: dict[float, int]) -> dict[float, int]:
        """The UTC years all of whose months are rolled up into one bucket, with it."""
        years: dict[float, set[int]] = {}
        months: dict[float, int] = {}
        for ms, b in bucket_of.items():
            ys = year_start(ms)
            years.setdefault(ys, set()).add(b)
            months[ys] = months.get(ys, 0) + 1
        return {ys: next(iter(bs)) for ys, bs in years.items() if months[ys] == 12 and len(bs) == 1}

    def served(self, column: str) -> str:
        """`` AND`` the rollup row (alias r) starting at ``column`` is not one kpi_unserved lists."""
        if not self.unserved:
            return ""
        return (
            " AND NOT EXISTS (SELECT 1 FROM kpi_unserved u WHERE u.device_id = r.device_id"
            f" AND u.ms <= {column} AND {column} < u.me)"
        )

    async def rolled_rows(self, bucket_of: dict[float, int]) -> None:
        """The rolled-up rows, per report row and bucket: counts and sums (SQL sums them), the
        cost per dispatch of the customer at the time, and the percentile populations and
        restore times of the dispatches avoided (each row's values are float64 bytes,
        concatenated by the database). A device with one customer/site period throughout (most)
        is summed per bucket first, in key order, and joined once; the others row by row, each
        month to the period holding its incidents."""

        def concat(column: str) -> str:
            if self.d.pg:
                return f"string_agg({column}, ''::bytea)"
            return f"CAST(group_concat({column}, '') AS BLOB)"

        counts = (
            "n", "ch_auto", "ch_customer", "ch_remote", "ch_field", "avoided", "ftf", "n_mtrs", "n_mtta",
            "n_mttrespond", "t_mtrs", "t_mtta", "t_mttrespond", "t_mttresolve",
            "opened", "remote", "failures", "repeats", "episodes", "transients",
        )  # fmt: skip
        blobs = ("v_mtrs", "v_mtta", "v_mttrespond", "v_mttresolve", "v_avoided")
        bucket = "CASE r.month_s " + " ".join(f"WHEN {ms!r} THEN {b}" for ms, b in bucket_of.items()) + " END"
        whole = f"p.pf = -{OPEN_END} AND p.pt = {OPEN_END}"  # the device's only period
        months = f"r.month_s >= :m_lo AND r.month_s < :m_hi{self.served('r.month_s')}"
        avoided_values = "CASE WHEN r.avoided > 0 THEN r.v_avoided END"
        inner = ", ".join(
            [
                *(f"SUM(r.{c}) AS {c}" for c in counts),
                *(concat(f"r.{c}") + f" AS {c}" for c in blobs[:4]),
                concat(avoided_values) + " AS v_avoided",
            ]
        )

        def report_row(alias: str, values: list[str]) -> str:
            """The sums of a report row, with the cost per dispatch after ``avoided``."""
            return ", ".join(
                [
                    *(f"SUM({alias}.{c})" for c in counts[:6]),
                    f"SUM({alias}.avoided * COALESCE(c.cost_per_dispatch, 0))",
                    *(f"SUM({alias}.{c})" for c in counts[6:]),
                    *values,
                ]
            )

        outer = report_row("x", [concat(f"x.{c}") for c in blobs])
        per_row = report_row("r", [*(concat(f"r.{c}") for c in blobs[:4]), concat(avoided_values)])
        kept = "p.kept = 1 AND p.model_kept = 1"
        by_months = f"""
                SELECT r.device_id, {bucket} AS b, {inner}
                FROM kpi_incident_months r WHERE {months}{{not_years}}
                GROUP BY r.device_id, {bucket}"""
        years = self.whole_years(bucket_of)
        if years:  # whole calendar years in one bucket: one row per device and year
            self.params["y_lo"], self.params["y_hi"] = min(years), next_year_start(max(years))
            year_bucket = (
                "CASE r.year_s " + " ".join(f"WHEN {ys!r} THEN {b}" for ys, b in years.items()) + " END"
            )
            by_months = by_months.replace("{not_years}", " AND (r.month_s < :y_lo OR r.month_s >= :y_hi)")
            by_months += f"""
                UNION ALL
                SELECT r.device_id, {year_bucket} AS b, {inner}
                FROM kpi_incident_years r
                WHERE r.year_s >= :y_lo AND r.year_s < :y_hi{self.served("r.year_s")}
                GROUP BY r.device_id, {year_bucket}"""
        else:
            by_months = by_months.replace("{not_years}", "")
        statements = (
            f"""
            WITH x AS ({by_months}
            )
            SELECT {self.group("p")} AS g, x.b, {outer}
            FROM x JOIN kpi_pieces p ON p.device_id = x.device_id AND {whole}
            LEFT JOIN customers c ON c.id = p.customer_id
            WHERE {kept}
            GROUP BY 1, 2""",
            f"""
            SELECT {self.group("p")} AS g, {bucket} AS b, {per_row}
            FROM kpi_incident_months r
            JOIN kpi_pieces p ON p.device_id = r.device_id AND p.pf <= r.lo_s AND r.hi_s < p.pt
            LEFT JOIN customers c ON c.id = p.customer_id
            WHERE {months} AND {kept} AND NOT ({whole})
              AND r.device_id IN (SELECT device_id FROM kpi_pieces p WHERE NOT ({whole}))
            GROUP BY 1, 2""",
        )
        for k, statement in enumerate(statements):
            started = time.perf_counter()
            for row in (await self.session.execute(text(statement), self.params)).all():
                self.add_rolled(*row)
            if k == 0 and years:
                self.timings["rolled_years"] = time.perf_counter() - started

    def add_rolled(self, g: Any, b: int, n: int, *rest: Any) -> None:
        """One row of :meth:`rolled_rows` into the report row (g, b)."""
        agg = self.row(g, b)
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
        values = rest[20:25]
        for m, blob in enumerate(values[:4]):
            if blob:
                self.populations.setdefault((g, b, m), []).append(decode(bytes(blob)))
        if values[4]:
            restore = decode(bytes(values[4]))
            agg.downtime_avoided += float(np.maximum(0.0, self.spec.baseline_restore_s - restore).sum())

    async def resolved(self) -> None:
        """The incidents resolved in each bucket that the rollups did not serve (sign +1), less
        those of an extended month's part outside P that they did (sign -1)."""
        fixed = "COALESCE(i.rss, i.rvs)"
        channels = ",\n".join(
            f"SUM(CASE WHEN i.channel = '{c.value}' THEN kb.sgn ELSE 0 END) AS ch_{c.value}" for c in Channel
        )
        avoided = "i.channel IN ('remote', 'customer') AND i.nd = 1"
        nonneg = self.d.nonneg
        sql = f"""
            SELECT {self.group("i", "i.code")} AS g, kb.b,
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
                             AND {self.d.least("j.fault_s", "j.detect_s")} < {fixed} + :repeat AND j.id <> i.id
                       ) THEN kb.sgn ELSE 0 END) AS ftf,
                   SUM(CASE WHEN i.rss IS NOT NULL THEN kb.sgn * {nonneg("i.rss - i.fs")} END) AS t_mtrs,
                   SUM(CASE WHEN i.rss IS NOT NULL THEN kb.sgn ELSE 0 END) AS n_mtrs,
                   SUM(CASE WHEN i.acs IS NOT NULL THEN kb.sgn * {nonneg("i.acs - i.ds")} END) AS t_mtta,
                   SUM(CASE WHEN i.acs IS NOT NULL THEN kb.sgn ELSE 0 END) AS n_mtta,
                   SUM(CASE WHEN i.rps IS NOT NULL THEN kb.sgn * {nonneg("i.rps - i.ds")} END) AS t_mttrespond,
                   SUM(CASE WHEN i.rps IS NOT NULL THEN kb.sgn ELSE 0 END) AS n_mttrespond,
                   SUM(kb.sgn * {nonneg("i.rvs - i.ds")}) AS t_mttresolve
            FROM kpi_incidents i CROSS JOIN kpi_ibuckets kb
            WHERE i.rvs >= kb.bs AND i.rvs < kb.be AND {self.signed("i.rvs")}{self.code_filter("i.code")}
            GROUP BY 1, 2
        """
        names = [c.value for c in Channel]
        for r in await self.fetch("resolved", sql):
            g, b, resolved, by_channel, rest = (
                r[0],
                r[1],
                int(r[2]),
                r[3 : 3 + len(names)],
                r[3 + len(names) :],
            )
            agg = self.row(g, b)
            agg.resolved += resolved
            for name, count in zip(names, by_channel, strict=True):
                if count:
                    agg.channels[name] = agg.channels.get(name, 0) + int(count)
            agg.dispatched_resolved = agg.channels.get(Channel.FIELD.value, 0)
            agg.dispatches_avoided += int(rest[0] or 0)
            agg.dispatches_avoided_value += float(rest[1] or 0.0)
            agg.downtime_avoided += float(rest[2] or 0.0)
            agg.first_time_fixes += int(rest[3] or 0)
            agg.mtrs.total, agg.mtrs.n = (
                agg.mtrs.total + float(rest[4] or 0.0),
                agg.mtrs.n + int(rest[5] or 0),
            )
            agg.mtta.total, agg.mtta.n = (
                agg.mtta.total + float(rest[6] or 0.0),
                agg.mtta.n + int(rest[7] or 0),
            )
            agg.mttrespond.total = agg.mttrespond.total + float(rest[8] or 0.0)
            agg.mttrespond.n += int(rest[9] or 0)
            agg.mttresolve.total, agg.mttresolve.n = (
                agg.mttresolve.total + float(rest[10] or 0.0),
                agg.mttresolve.n + resolved,
            )

    def resolved_in_buckets(self) -> str:
        """Joins from incidents (alias i) resolved in P to their customer/site period at the
        (clamped) t_fault (p), kept by the filters, and their bucket (kb): the incidents table
        itself, so knowledge measures need not load every resolved incident — they start from
        the few rows of the knowledge tables."""
        fault = self.d.least("i.fault_s", "i.detect_s")
        return f"""
            JOIN kpi_pieces p ON p.device_id = i.device_id AND p.pf <= {fault} AND {fault} < p.pt
                            AND p.kept = 1 AND p.model_kept = 1
            JOIN kpi_buckets kb ON i.resolved_s >= kb.bs AND i.resolved_s < kb.be"""

    async def knowledge(self) -> None:
        """Knowledge measures of the incidents resolved in each bucket: their article links
        (and how many point to an article older than the incident), resolve time with a link
        (without: the rest of the row's resolve time, summed by :meth:`resolved`); then the
        applied suggestions, read from the timeline (few rows) and matched with the fixed
        links here."""
        nonneg, group = self.d.nonneg, self.group("p", "i.fault_code")
        code = self.fault_filter("i.fault_code")
        sql = f"""
            WITH lk AS (
                SELECT l.incident_id AS id, COUNT(*) AS n,
                       SUM(CASE WHEN {self.d.epoch("a.created_at")} < i.detect_s THEN 1 ELSE 0 END) AS reused
                FROM kb_article_links l
                JOIN incidents i ON i.id = l.incident_id
                LEFT JOIN kb_articles a ON a.id = l.article_id
                WHERE i.resolved_s >= :t0 AND i.resolved_s < :te{code}
                GROUP BY l.incident_id
            )
            SELECT {group} AS g, kb.b, COUNT(*), SUM(lk.n), SUM(lk.reused),
                   SUM({nonneg("i.resolved_s - i.detect_s")})
            FROM lk JOIN incidents i ON i.id = lk.id{self.resolved_in_buckets()}
            GROUP BY 1, 2
        """
        for g, b, linked, links, reused, with_total in await self.fetch("knowledge", sql):
            kb = self.row(g, b).kb
            kb.linked, kb.links, kb.reused = int(linked or 0), int(links or 0), int(reused or 0)
            kb.with_total = float(with_total or 0.0)
        for agg in self.rows.values():
            agg.kb.without_total = max(0.0, agg.mttresolve.total - agg.kb.with_total)
        await self.shown_suggestions(group, code)
        applied = await self.fetch(
            "knowledge_applied",
            f"""
            SELECT {group} AS g, kb.b, i.id, e.detail
            FROM incident_timeline e JOIN incidents i ON i.id = e.incident_id{self.resolved_in_buckets()}
            WHERE e.kind = :applied AND i.resolved_s >= :t0 AND i.resolved_s < :te{code}
            """,
            applied=APPLIED,
        )
        if not applied:
            return
        fixed = await self.fetch(
            "knowledge_fixed",
            """
            SELECT l.incident_id, l.article_id FROM kb_article_links l
            JOIN incidents i ON i.id = l.incident_id
            WHERE l.fixed AND i.resolved_s >= :t0 AND i.resolved_s < :te
            """,
        )
        worked: dict[int, set[int]] = {}
        for incident_id, article_id in fixed:
            worked.setdefault(incident_id, set()).add(article_id)
        per_incident: dict[tuple[Any, int, int], set[int]] = {}
        for g, b, incident_id, detail in applied:
            value = json.loads(detail) if isinstance(detail, str) else detail
            article = value.get("article_id") if isinstance(value, dict) else None
            articles = per_incident.setdefault((g, b, incident_id), set())
            if isinstance(article, int):
                articles.add(article)
        for (g, b, incident_id), articles in per_incident.items():
            if not articles:
                continue
            kb = self.row(g, b).kb
            kb.applied += 1
            kb.applied_hits += bool(articles & worked.get(incident_id, set()))

    async def shown_suggestions(self, group: str, code: str) -> None:
        """kb_shown / kb_shown_hits5: per incident resolved in the bucket, whether suggestions
        were shown at or before its resolution, and whether one shown at rank <= HIT_RANK is
        an article whose link fixed it (kb_suggestions_shown joined with kb_article_links)."""
        sql = f"""
            WITH sh AS (
                SELECT s.incident_id AS id,
                       MAX(CASE WHEN s.best_rank <= :hit_rank AND EXISTS (
                               SELECT 1 FROM kb_article_links l
                               WHERE l.incident_id = s.incident_id AND l.article_id = s.article_id AND l.fixed
                           ) THEN 1 ELSE 0 END) AS hit
                FROM kb_suggestions_shown s JOIN incidents i ON i.id = s.incident_id
                WHERE {self.d.epoch("s.first_shown_at")} <= i.resolved_s
                  AND i.resolved_s >= :t0 AND i.resolved_s < :te{code}
                GROUP BY s.incident_id
            )
            SELECT {group} AS g, kb.b, COUNT(*), SUM(sh.hit)
            FROM sh JOIN incidents i ON i.id = sh.id{self.resolved_in_buckets()}
            GROUP BY 1, 2
        """
        for g, b, shown, hits in await self.fetch("knowledge_shown", sql, hit_rank=HIT_RANK):
            kb = self.row(g, b).kb
            kb.shown, kb.shown_hits5 = int(shown or 0), int(hits or 0)

    def open_join(self) -> str:
        return "i.ds < kb.be AND (i.rvs IS NULL OR i.rvs >= kb.be)"

    async def percentiles(self) -> None:
        """Medians and p90s: rank each population in SQL, fetch the rows at the ranks."""
        nonneg = self.d.nonneg
        group = self.group("i", "i.code")
        value = f"""CASE m.m
                WHEN 0 THEN CASE WHEN i.rss IS NOT NULL THEN {nonneg("i.rss - i.fs")} END
                WHEN 1 THEN CASE WHEN i.acs IS NOT NULL THEN {nonneg("i.acs - i.ds")} END
                WHEN 2 THEN CASE WHEN i.rps IS NOT NULL THEN {nonneg("i.rps - i.ds")} END
                ELSE {nonneg("i.rvs - i.ds")} END"""
        x = f"""
            WITH x AS (
                SELECT {group} AS g, kb.b AS b, m.m AS m, {value} AS v
                FROM kpi_incidents i CROSS JOIN kpi_buckets kb
                CROSS JOIN (SELECT 0 AS m UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) m
                WHERE i.rvs >= kb.bs AND i.rvs < kb.be{self.code_filter("i.code")}
                UNION ALL
                SELECT {group} AS g, kb.b AS b, 4 AS m, kb.be - i.ds AS v
                FROM kpi_incidents i CROSS JOIN kpi_buckets kb
                WHERE {self.open_join()}{self.code_filter("i.code")}
            )"""
        if self.d.pg and self.rolled_months is None:  # the same interpolation as percentile()
            sql = f"""{x}
                SELECT g, b, m, percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY v)
                FROM x WHERE v IS NOT NULL GROUP BY 1, 2, 3
            """
            for g, b, m, (median, p90) in await self.fetch("percentiles", sql):
                summary: DurationSummary = getattr(self.row(g, b), _METRICS[m])
                summary.median, summary.p90 = float(median), float(p90)
            return
        # SQLite (or with rolled-up months): fetch each population's values (one row per
        # incident) and rank them here
        per_incident = f"""
            SELECT {group} AS g, kb.b AS b, kb.sgn,
                   CASE WHEN i.rss IS NOT NULL THEN {nonneg("i.rss - i.fs")} END,
                   CASE WHEN i.acs IS NOT NULL THEN {nonneg("i.acs - i.ds")} END,
                   CASE WHEN i.rps IS NOT NULL THEN {nonneg("i.rps - i.ds")} END,
                   {nonneg("i.rvs - i.ds")}
            FROM kpi_incidents i CROSS JOIN kpi_ibuckets kb
            WHERE i.rvs >= kb.bs AND i.rvs < kb.be AND {self.signed("i.rvs")}{self.code_filter("i.code")}
        """
        open_age = f"""
            SELECT {group} AS g, kb.b AS b, kb.be - i.ds
            FROM kpi_incidents i CROSS JOIN kpi_buckets kb
            WHERE {self.open_join()}{self.code_filter("i.code")}
        """
        raw: dict[tuple[Any, int, int], list[float]] = {}
        removed: dict[tuple[Any, int, int], list[float]] = {}  # of an extended month, outside P
        for g, b, sgn, *values in await self.fetch("percentiles", per_incident):
            into = raw if sgn > 0 else removed
            for m, v in enumerate(values):
                if v is not None:
                    into.setdefault((g, b, m), []).append(float(v))
        fetched = self.timings["percentiles"]
        for g, b, v in await self.fetch("percentiles", open_age):
            if v is not None:
                raw.setdefault((g, b, 4), []).append(float(v))
        self.timings["percentiles"] += fetched
        started = time.perf_counter()
        populations = self.populations  # with those of the rolled-up months
        for key, values in raw.items():
            populations.setdefault(key, []).append(np.array(values, dtype=np.float64))
        for key, chunks in populations.items():
            values = np.concatenate(chunks)
            if key in removed:
                values = multiset_difference(values, np.array(removed[key], dtype=np.float64))
            summary = getattr(self.row(key[0], key[1]), _METRICS[key[2]])
            summary.median, summary.p90 = array_percentiles(values, ((1, 2), (9, 10)))
        self.timings["ranks"] = time.perf_counter() - started

    async def counts(self) -> None:
        """Opened in P (and with a remote session) and failures in P (and repeats), signed as
        :meth:`resolved`; still open at each bucket's end (and how old)."""
        group = self.group("i", "i.code")
        repeat = """EXISTS (
                           SELECT 1 FROM incidents j
                           WHERE j.device_id = i.device_id AND j.fault_code = i.code
                             AND j.restored_s <= i.fs AND j.restored_s > i.fs - :repeat
                             AND j.effect = 'down' AND NOT j.external AND j.id <> i.id)"""
        opened = f"i.ds >= kb.bs AND i.ds < kb.be AND {self.signed('i.ds')}"
        failed = f"i.failure = 1 AND i.fs >= kb.bs AND i.fs < kb.be AND {self.signed('i.fs')}"
        sql = f"""
            SELECT {group} AS g, kb.b,
                   SUM(CASE WHEN {opened} THEN kb.sgn ELSE 0 END) AS opened,
                   SUM(CASE WHEN {opened} THEN kb.sgn * i.ru ELSE 0 END) AS remote,
                   SUM(CASE WHEN {failed} THEN kb.sgn ELSE 0 END) AS failures,
                   SUM(CASE WHEN {failed} AND {repeat} THEN kb.sgn ELSE 0 END) AS repeats
            FROM kpi_incidents i CROSS JOIN kpi_ibuckets kb
            WHERE (({opened}) OR ({failed})){self.code_filter("i.code")}
            GROUP BY 1, 2
        """
        for g, b, opened_n, remote, failures, repeats in await self.fetch("counts", sql):
            agg = self.row(g, b)
            agg.incidents += int(opened_n or 0)
            agg.remote_used += int(remote or 0)
            agg.failures += int(failures or 0)
            agg.repeat_failures += int(repeats or 0)
        still = f"""
            SELECT {group} AS g, kb.b, COUNT(*), SUM(kb.be - i.ds), MAX(kb.be - i.ds)
            FROM kpi_incidents i CROSS JOIN kpi_buckets kb
            WHERE {self.open_join()}{self.code_filter("i.code")}
            GROUP BY 1, 2
        """
        for g, b, still_open, age, oldest in await self.fetch("open", still):
            agg = self.row(g, b)
            agg.open_at_end += still_open
            agg.open_age.n, agg.open_age.total, agg.open_age.maximum = still_open, float(age), float(oldest)

    async def episodes(self) -> None:
        """Failures that begin an episode: that start at or after every earlier failure of the
        device ended — a running maximum over the device's failures in kpi_incidents, which
        holds every failure reaching into P when P is read whole, and all of a device's when
        the rollups do not serve it. With rolled-up months the few incidents of served devices
        read raw take it from ``kpi_episode_starts`` (built with the rollups), so the history
        before them need not be read."""
        # a failure ends at its restore, else its resolution, else never (see reference.failure_end)
        end = f"{self.d.greatest(f'COALESCE(i.rss, i.rvs, {OPEN_END})', 'i.fs')}"
        begins = "(w.m IS NULL OR w.s >= w.m)"
        if self.rolled_months is not None:
            window = (
                f"w.device_id IN (SELECT device_id FROM kpi_unserved) AND {begins}"
                if self.unserved
                else "1 = 0"
            )
            starts = "EXISTS (SELECT 1 FROM kpi_episode_starts e WHERE e.incident_id = w.id)"
            served = " AND w.device_id NOT IN (SELECT device_id FROM kpi_unserved)" if self.unserved else ""
            begins = f"(({window}) OR ({starts}{served}))"
        sql = f"""
            WITH w AS (
                SELECT i.id, i.device_id, i.customer_id, i.site_id, i.model, i.code, i.kept, i.fs AS s,
                       MAX({end}) OVER (PARTITION BY i.device_id ORDER BY i.fs, {end} DESC, i.id
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS m
                FROM kpi_incidents i WHERE i.failure = 1
            )
            SELECT {self.group("w", "w.code")} AS g, kb.b, SUM(kb.sgn) AS n
            FROM w CROSS JOIN kpi_ibuckets kb
            WHERE {begins} AND w.s >= kb.bs AND w.s < kb.be
              AND {self.signed("w.s", "w.device_id")}{self.code_filter("w.code")}
            GROUP BY 1, 2
        """
        for g, b, n in await self.fetch("episodes", sql):
            self.row(g, b).failure_episodes += int(n)

    def raw_ranges(self) -> list[tuple[float, float]]:
        """What the incident steps read raw (besides the devices the rollups do not serve): all
        of P without rolled months; else P's parts outside them and the subtracted parts."""
        if self.rolled_months is None:
            return [(self.period.t0, self.period.te)]
        m_lo, m_hi = self.rolled_months
        edges = ((self.period.t0, min(m_lo, self.period.te)), (max(m_hi, self.period.t0), self.period.te))
        return [(lo, hi) for lo, hi in (*edges, *self.minus) if lo < hi]

    async def transients(self) -> None:
        raised = self.d.epoch("t.raised_at")
        sql = f"""
            SELECT {self.group("p", "t.code")} AS g, kb.b, SUM(kb.sgn) AS n
            FROM transient_faults t
            JOIN kpi_pieces p ON p.device_id = t.device_id AND p.kept = 1 AND p.pf <= {raised} AND {raised} < p.pt
            JOIN kpi_ibuckets kb ON {raised} >= kb.bs AND {raised} < kb.be
            WHERE {self.signed(raised, "t.device_id")}{self.fault_filter("t.code")}{{ranges}}
            GROUP BY 1, 2
        """
        times: dict[str, datetime] = {}
        branches = ["t.device_id IN (SELECT device_id FROM kpi_unserved)"] if self.unserved else []
        for k, (lo, hi) in enumerate(self.raw_ranges()):
            times[f"r{k}lo_dt"], times[f"r{k}hi_dt"] = to_datetime(lo), to_datetime(hi)
            branches.append(f"(t.raised_at >= :r{k}lo_dt AND t.raised_at < :r{k}hi_dt)")
        if not branches:
            return
        ranges = f" AND ({' OR '.join(branches)})"
        for g, b, n in await self.fetch("transients", sql.replace("{ranges}", ranges), **times):
            self.row(g, b).transient_faults += int(n)


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
    hours_keys = {c.id: hours_key(c.contract_hours) for c in customers if c.id in calendars}
    query = _Query(session, spec, period, cuts, rollups=rollups, hours_keys=hours_keys)
    prepared = time.perf_counter()
    await create_temporary_tables(session, query.d, cuts=cuts, t0=period.t0, te=period.te)
    await query.load_bounds()
    await query.load_pieces()
    query.timings["prepare"] = time.perf_counter() - prepared
    await query.keys()
    if spec.with_state:
        await query.required_time(calendars)
        await query.state_time(calendars)
    await query.resolved_rolled()  # which months the rollups serve: the rest is loaded raw
    await query.load_incidents()
    await query.resolved()
    await query.knowledge()
    await query.percentiles()
    await query.counts()
    await query.episodes()
    await query.transients()
    await empty_temporary_tables(session)  # on an error the caller's rollback (or the next report) does
    logger.debug(
        "kpi report %s in %.3fs: %s",
        spec,
        time.perf_counter() - started,
        ", ".join(f"{k}={v:.3f}" for k, v in query.timings.items()),
    )
    report = assemble(spec, period, cuts, query.rows, names=names, engine="sql")
    report.timings.update(query.timings)
    report.timings["total"] = time.perf_counter() - started
    return report
