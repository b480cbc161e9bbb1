"""Incident rollups: per device and UTC month, what the ``resolved``, ``percentiles``,
``counts``, ``episodes`` and ``transients`` steps of :mod:`server.kpi.query` need, so a
year-long report reads one row per device and month instead of every incident of the year.

``kpi_incident_months`` (migration 0011) holds, for the incidents of one device resolved in
one UTC month: their count, channels, dispatches avoided, first-time fixes, the sums and counts
of MTRS/MTTA/MTTRespond/MTTResolve, and every value of those four populations (and of the
restore times of the dispatches avoided, for ``downtime_avoided`` under any baseline) as
float64 bytes — percentiles stay exact: the report concatenates and sorts the same values the
raw path would fetch. By the month of their own time (migration 0012): incidents opened
(t_detect) and with a remote session, failures (clamped t_fault), repeat failures, failure
episodes begun, transient faults (raised), and the restore time of each failure episode restored
in the month (``v_mtrs_episode``, migration 0014: MTRS per episode, by the month of the
episode's restore). ``lo_s``/``hi_s`` bound the clamped t_fault (raised time) of everything in
the row (of an episode: its incident's); the customer/site at the time, the filters and the cost per
dispatch are applied by the report, which uses a row only when [lo_s, hi_s] lies in one
customer/site period of the device.

Every value is computed exactly as the raw SQL computes it (``query._Query.resolved``); a
row depends on all of its device's incidents (a first-time fix is judged by later ones, a
repeat and an episode by earlier ones), so triggers on ``incidents`` and ``transient_faults``
mark the whole device dirty (``kpi_incident_dirty``), a report
reads a dirty device raw, and :func:`refresh_incident_rollups` rebuilds it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import BindParameter, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.kpi.definitions import REPEAT_WINDOW_S
from server.kpi.sql import OPEN_END, Dialect

__all__ = [
    "IncidentRow",
    "MonthRollup",
    "build_months",
    "build_years",
    "decode",
    "month_start",
    "next_month_start",
    "next_year_start",
    "refresh_incident_rollups",
    "year_start",
]

_CHUNK = 500
COLUMNS = (
    "n", "ch_auto", "ch_customer", "ch_remote", "ch_field", "avoided", "ftf",
    "n_mtrs", "n_mtta", "n_mttrespond", "t_mtrs", "t_mtta", "t_mttrespond", "t_mttresolve",
    "v_mtrs", "v_mtta", "v_mttrespond", "v_mttresolve", "v_avoided",
    "opened", "remote", "failures", "repeats", "episodes", "transients", "v_mtrs_episode",
)  # fmt: skip


def month_start(x: float) -> float:
    """The start of the UTC month holding epoch seconds ``x``."""
    day = datetime.fromtimestamp(x, UTC)
    return datetime(day.year, day.month, 1, tzinfo=UTC).timestamp()


def next_month_start(x: float) -> float:
    """The start of the UTC month after the one holding epoch seconds ``x``."""
    day = datetime.fromtimestamp(x, UTC)
    return datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC).timestamp()


def year_start(x: float) -> float:
    """The start of the UTC year holding epoch seconds ``x``."""
    return datetime(datetime.fromtimestamp(x, UTC).year, 1, 1, tzinfo=UTC).timestamp()


def next_year_start(x: float) -> float:
    """The start of the UTC year after the one holding epoch seconds ``x``."""
    return datetime(datetime.fromtimestamp(x, UTC).year + 1, 1, 1, tzinfo=UTC).timestamp()


def decode(values: bytes) -> npt.NDArray[np.float64]:
    """A population column: float64 values in machine order (written and read on one host)."""
    return np.frombuffer(values, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class IncidentRow:
    id: int
    code: str | None
    fault_s: float
    detect_s: float
    ack_s: float | None
    respond_s: float | None
    restored_s: float | None
    resolved_s: float | None
    channel: str | None
    needs_dispatch: bool
    visits: int | None
    remote_used: bool = False
    failure: bool = False  # unplanned down, not external (what MTBF counts)
    episodes: tuple[tuple[float, float, float | None], ...] = ()  # (start, detection, restore)

    @property
    def fs(self) -> float:
        """t_fault clamped to t_detect (a fast device clock), as the report reads it."""
        return min(self.fault_s, self.detect_s)

    @property
    def failure_end(self) -> float:
        """Restore, else resolution, else never; never before the failure (the SQL's end)."""
        end = self.restored_s if self.restored_s is not None else self.resolved_s
        return max(OPEN_END if end is None else end, self.fs)


@dataclass(slots=True)
class MonthRollup:
    lo_s: float
    hi_s: float
    counts: dict[str, int] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    values: dict[str, array[float]] = field(default_factory=dict)

    def row(self, device_id: str, month: float) -> dict[str, Any]:
        out: dict[str, Any] = {"device_id": device_id, "month_s": month, "lo_s": self.lo_s, "hi_s": self.hi_s}
        for name in COLUMNS:
            if name.startswith("v_"):
                out[name] = self.values.get(name, array("d")).tobytes()
            elif name.startswith("t_"):
                out[name] = self.totals.get(name, 0.0)
            else:
                out[name] = self.counts.get(name, 0)
        return out


def _first_time_fix(incident: IncidentRow, fixed: float, same_code: Sequence[IncidentRow]) -> bool:
    """No incident of the same code on the device starts within the repeat window after the
    fix (the raw SQL's NOT EXISTS, NULL codes matching nothing)."""
    if incident.channel != "field" or incident.visits is None or incident.visits > 1:
        return False
    return not any(
        j.fault_s >= fixed
        and j.detect_s >= fixed
        and min(j.fault_s, j.detect_s) < fixed + REPEAT_WINDOW_S
        and j.id != incident.id
        for j in same_code
    )


def _repeats(failures: Sequence[IncidentRow]) -> set[int]:
    """Failures whose code failed on the device and was restored within the repeat window
    before (the raw SQL's EXISTS: restored in (fs - window, fs], another incident)."""
    out: set[int] = set()
    for i in failures:
        if i.code is None:
            continue
        if any(
            j.code == i.code
            and j.restored_s is not None
            and i.fs - REPEAT_WINDOW_S < j.restored_s <= i.fs
            and j.id != i.id
            for j in failures
        ):
            out.add(i.id)
    return out


def _episode_starts(failures: Sequence[IncidentRow]) -> set[int]:
    """Failures that start at or after every earlier one ended (the raw SQL's running maximum,
    in its order: t_fault, the longer first, id)."""
    out: set[int] = set()
    reach: float | None = None
    for i in sorted(failures, key=lambda f: (f.fs, -f.failure_end, f.id)):
        if reach is None or i.fs >= reach:
            out.add(i.id)
        reach = i.failure_end if reach is None else max(reach, i.failure_end)
    return out


def _add_resolved(
    m: MonthRollup, i: IncidentRow, resolved_s: float, by_code: dict[str, list[IncidentRow]]
) -> None:
    """An incident resolved in ``m``'s month: the ``resolved`` step's counts, sums and values."""
    counts, fs = m.counts, i.fs

    def add(name: str, value: float) -> None:
        m.totals["t_" + name] = m.totals.get("t_" + name, 0.0) + value
        m.values.setdefault("v_" + name, array("d")).append(value)
        if name != "mttresolve":
            counts["n_" + name] = counts.get("n_" + name, 0) + 1

    counts["n"] = counts.get("n", 0) + 1
    if i.channel in ("auto", "customer", "remote", "field"):
        counts["ch_" + i.channel] = counts.get("ch_" + i.channel, 0) + 1
    fixed = i.restored_s if i.restored_s is not None else resolved_s
    if i.channel in ("remote", "customer") and i.needs_dispatch:
        counts["avoided"] = counts.get("avoided", 0) + 1
        m.values.setdefault("v_avoided", array("d")).append(max(0.0, fixed - fs))
    if _first_time_fix(i, fixed, by_code[i.code] if i.code is not None else []):
        counts["ftf"] = counts.get("ftf", 0) + 1
    if i.restored_s is not None:
        add("mtrs", max(0.0, i.restored_s - fs))
    if i.ack_s is not None:
        add("mtta", max(0.0, i.ack_s - i.detect_s))
    if i.respond_s is not None:
        add("mttrespond", max(0.0, i.respond_s - i.detect_s))
    add("mttresolve", max(0.0, resolved_s - i.detect_s))


def build_months(
    incidents: Iterable[IncidentRow], transients: Iterable[float] = ()
) -> dict[float, MonthRollup]:
    """One device's rollup rows by month, from all of its incidents and the raise times of
    its transient faults."""
    by_code: dict[str, list[IncidentRow]] = {}
    every = list(incidents)
    for i in every:
        if i.code is not None:
            by_code.setdefault(i.code, []).append(i)
    out: dict[float, MonthRollup] = {}

    def month_of(x: float, fs: float) -> MonthRollup:
        month = month_start(x)
        m = out.get(month)
        if m is None:
            m = out[month] = MonthRollup(fs, fs)
        m.lo_s, m.hi_s = min(m.lo_s, fs), max(m.hi_s, fs)
        return m

    def count(m: MonthRollup, name: str) -> None:
        m.counts[name] = m.counts.get(name, 0) + 1

    failures = [i for i in every if i.failure]
    repeats, episodes = _repeats(failures), _episode_starts(failures)
    for i in every:
        fs = i.fs
        opened = month_of(i.detect_s, fs)
        count(opened, "opened")
        if i.remote_used:
            count(opened, "remote")
        if i.failure:
            failed = month_of(fs, fs)
            count(failed, "failures")
            if i.id in repeats:
                count(failed, "repeats")
            if i.id in episodes:
                count(failed, "episodes")
        if i.resolved_s is not None:
            _add_resolved(month_of(i.resolved_s, fs), i, i.resolved_s, by_code)
        for start, detect, restored in i.episodes:  # MTRS per episode, by the month of its restore
            if restored is not None:
                restores = month_of(restored, fs).values.setdefault("v_mtrs_episode", array("d"))
                restores.append(max(0.0, restored - min(start, detect)))
    for raised in transients:
        count(month_of(raised, raised), "transients")
    return out


def build_years(months: dict[float, MonthRollup]) -> dict[float, MonthRollup]:
    """The months of each UTC year merged into one row: counts and sums added, values
    concatenated (a population's order does not matter), the bounds widened."""
    out: dict[float, MonthRollup] = {}
    for month in sorted(months):
        m = months[month]
        y = out.setdefault(year_start(month), MonthRollup(m.lo_s, m.hi_s))
        y.lo_s, y.hi_s = min(y.lo_s, m.lo_s), max(y.hi_s, m.hi_s)
        for name, count in m.counts.items():
            y.counts[name] = y.counts.get(name, 0) + count
        for name, total in m.totals.items():
            y.totals[name] = y.totals.get(name, 0.0) + total
        for name, values in m.values.items():
            y.values.setdefault(name, array("d")).extend(values)
    return out


async def refresh_incident_rollups(
    session: AsyncSession, device_ids: Sequence[str] | None = None, *, limit: int | None = None
) -> int:
    """Rebuild the rollup rows of the dirty devices (of ``device_ids`` when given; at most
    ``limit`` of them). Returns the number rebuilt. The dirty mark is removed first, so a write
    committed meanwhile leaves the device dirty, never stale."""
    where = "" if device_ids is None else " WHERE device_id IN :ids"
    cap = "" if limit is None else " ORDER BY device_id LIMIT :limit"
    statement = text(f"SELECT device_id FROM kpi_incident_dirty{where}{cap}")  # noqa: S608
    if device_ids is not None:
        if not device_ids:
            return 0
        statement = statement.bindparams(bindparam("ids", expanding=True))
    params: dict[str, Any] = {} if device_ids is None else {"ids": list(device_ids)}
    if limit is not None:
        params["limit"] = int(limit)
    dirty = list((await session.scalars(statement, params)).all())
    for offset in range(0, len(dirty), _CHUNK):
        await _rebuild(dirty[offset : offset + _CHUNK], session)
    return len(dirty)


async def _rebuild(ids: list[str], session: AsyncSession) -> None:
    expanding: BindParameter[Any] = bindparam("ids", expanding=True)
    for table in ("kpi_incident_dirty", "kpi_incident_months", "kpi_incident_years", "kpi_episode_starts"):
        await session.execute(
            text(f"DELETE FROM {table} WHERE device_id IN :ids").bindparams(expanding),  # noqa: S608
            {"ids": ids},
        )
    per_device: dict[str, list[IncidentRow]] = {d: [] for d in ids}
    spans: dict[int, list[tuple[float, float, float | None]]] = {}
    result = await session.execute(
        text(
            "SELECT e.incident_id, e.fault_s, e.detect_s, e.restored_s FROM incident_episodes e "
            "JOIN incidents i ON i.id = e.incident_id WHERE i.device_id IN :ids ORDER BY e.incident_id, e.seq"
        ).bindparams(expanding),
        {"ids": ids},
    )
    for incident_id, start, detect, restored in result:
        spans.setdefault(incident_id, []).append((start, detect, restored))
    result = await session.execute(
        text(
            "SELECT device_id, id, fault_code, fault_s, detect_s, ack_s, respond_s, restored_s, "
            "resolved_s, channel, needs_dispatch, visits, remote_used, "
            "CASE WHEN effect = 'down' AND NOT external THEN 1 ELSE 0 END "
            "FROM incidents WHERE device_id IN :ids"
        ).bindparams(expanding),
        {"ids": ids},
    )
    for (
        device_id,
        id_,
        code,
        fault,
        detect,
        ack,
        respond,
        restored,
        resolved,
        channel,
        nd,
        visits,
        ru,
        f,
    ) in result:
        per_device[device_id].append(
            IncidentRow(
                id_,
                code,
                fault,
                detect,
                ack,
                respond,
                restored,
                resolved,
                channel,
                bool(nd),
                visits,
                bool(ru),
                bool(f),
                tuple(spans.get(id_, ())),
            )
        )
    raised: dict[str, list[float]] = {d: [] for d in ids}
    epoch = Dialect(session.get_bind().dialect.name).epoch("raised_at")
    sql = f"SELECT device_id, {epoch} FROM transient_faults WHERE device_id IN :ids"  # noqa: S608
    result = await session.execute(text(sql).bindparams(expanding), {"ids": ids})
    for device_id, at in result:
        raised[device_id].append(at)
    rows: list[dict[str, Any]] = []
    years: list[dict[str, Any]] = []
    starts = [
        {"i": i, "d": d}
        for d, incidents in per_device.items()
        for i in _episode_starts([x for x in incidents if x.failure])
    ]
    if starts:
        await session.execute(
            text("INSERT INTO kpi_episode_starts (incident_id, device_id) VALUES (:i, :d)"), starts
        )
    for d, incidents in per_device.items():
        months = build_months(incidents, raised[d])
        rows += [m.row(d, month) for month, m in months.items()]
        for year, y in build_years(months).items():
            row = y.row(d, year)
            row["year_s"] = row.pop("month_s")
            years.append(row)
    for table, key, batch in (
        ("kpi_incident_months", "month_s", rows),
        ("kpi_incident_years", "year_s", years),
    ):
        if batch:
            columns = ("device_id", key, "lo_s", "hi_s", *COLUMNS)
            await session.execute(
                text(
                    f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
                    f"VALUES ({', '.join(':' + c for c in columns)})"
                ),
                batch,
            )
