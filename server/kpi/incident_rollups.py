"""Incident rollups: per device and UTC month of resolution, what the ``resolved`` and
``percentiles`` steps of :mod:`server.kpi.query` need, so a year-long report reads one row
per device and month instead of every incident resolved in it.

``kpi_incident_months`` (migration 0011) holds, for the incidents of one device resolved in
one UTC month: their count, channels, dispatches avoided, first-time fixes, the sums and counts
of MTRS/MTTA/MTTRespond/MTTResolve, and every value of those four populations (and of the
restore times of the dispatches avoided, for ``downtime_avoided`` under any baseline) as
float64 bytes — percentiles stay exact: the report concatenates and sorts the same values the
raw path would fetch. ``lo_s``/``hi_s`` bound the incidents' clamped t_fault; the customer/site
at the time, the filters and the cost per dispatch are applied by the report, which uses a row
only when [lo_s, hi_s] lies in one customer/site period of the device.

Every value is computed exactly as the raw SQL computes it (``query._Query.resolved``); a
row depends on all of its device's incidents (a first-time fix is judged by later ones), so
triggers on ``incidents`` mark the whole device dirty (``kpi_incident_dirty``), a report
reads a dirty device raw, and :func:`refresh_incident_rollups` rebuilds it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BindParameter, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.kpi.definitions import REPEAT_WINDOW_S

__all__ = [
    "IncidentRow",
    "MonthRollup",
    "build_months",
    "decode",
    "month_start",
    "next_month_start",
    "refresh_incident_rollups",
]

_CHUNK = 500
COLUMNS = (
    "n", "ch_auto", "ch_customer", "ch_remote", "ch_field", "avoided", "ftf",
    "n_mtrs", "n_mtta", "n_mttrespond", "t_mtrs", "t_mtta", "t_mttrespond", "t_mttresolve",
    "v_mtrs", "v_mtta", "v_mttrespond", "v_mttresolve", "v_avoided",
)  # fmt: skip


def month_start(x: float) -> float:
    """The start of the UTC month holding epoch seconds ``x``."""
    day = datetime.fromtimestamp(x, UTC)
    return datetime(day.year, day.month, 1, tzinfo=UTC).timestamp()


def next_month_start(x: float) -> float:
    """The start of the UTC month after the one holding epoch seconds ``x``."""
    day = datetime.fromtimestamp(x, UTC)
    return datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC).timestamp()


def decode(values: bytes) -> array[float]:
    """A population column: float64 values in machine order (written and read on one host)."""
    out = array("d")
    out.frombytes(values)
    return out


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


def build_months(incidents: Iterable[IncidentRow]) -> dict[float, MonthRollup]:
    """One device's rollup rows by month, from all of its incidents."""
    by_code: dict[str, list[IncidentRow]] = {}
    every = list(incidents)
    for i in every:
        if i.code is not None:
            by_code.setdefault(i.code, []).append(i)
    out: dict[float, MonthRollup] = {}
    for i in every:
        if i.resolved_s is None:
            continue
        fs = min(i.fault_s, i.detect_s)
        month = month_start(i.resolved_s)
        m = out.get(month)
        if m is None:
            m = out[month] = MonthRollup(fs, fs)
        m.lo_s, m.hi_s = min(m.lo_s, fs), max(m.hi_s, fs)
        counts = m.counts

        def add(name: str, value: float, m: MonthRollup = m) -> None:
            m.totals["t_" + name] = m.totals.get("t_" + name, 0.0) + value
            m.values.setdefault("v_" + name, array("d")).append(value)
            if name != "mttresolve":
                m.counts["n_" + name] = m.counts.get("n_" + name, 0) + 1

        counts["n"] = counts.get("n", 0) + 1
        if i.channel in ("auto", "customer", "remote", "field"):
            counts["ch_" + i.channel] = counts.get("ch_" + i.channel, 0) + 1
        fixed = i.restored_s if i.restored_s is not None else i.resolved_s
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
        add("mttresolve", max(0.0, i.resolved_s - i.detect_s))
    return out


async def refresh_incident_rollups(
    session: AsyncSession, device_ids: Sequence[str] | None = None, *, limit: int | None = None
) -> int:
    """Rebuild the rollup rows of the dirty devices (of ``device_ids`` when given; at most
    ``limit`` of them). Returns the number rebuilt. The dirty mark is removed first, so a write
    committed meanwhile leaves the device dirty, never stale."""
    where = "" if device_ids is None else " WHERE device_id IN :ids"
    cap = "" if limit is None else f" ORDER BY device_id LIMIT {int(limit)}"
    statement = text(f"SELECT device_id FROM kpi_incident_dirty{where}{cap}")  # noqa: S608
    if device_ids is not None:
        if not device_ids:
            return 0
        statement = statement.bindparams(bindparam("ids", expanding=True))
    params: dict[str, Any] = {} if device_ids is None else {"ids": list(device_ids)}
    dirty = list((await session.scalars(statement, params)).all())
    for offset in range(0, len(dirty), _CHUNK):
        await _rebuild(dirty[offset : offset + _CHUNK], session)
    return len(dirty)


async def _rebuild(ids: list[str], session: AsyncSession) -> None:
    expanding: BindParameter[Any] = bindparam("ids", expanding=True)
    for table in ("kpi_incident_dirty", "kpi_incident_months"):
        await session.execute(
            text(f"DELETE FROM {table} WHERE device_id IN :ids").bindparams(expanding),  # noqa: S608
            {"ids": ids},
        )
    per_device: dict[str, list[IncidentRow]] = {d: [] for d in ids}
    result = await session.execute(
        text(
            "SELECT device_id, id, fault_code, fault_s, detect_s, ack_s, respond_s, restored_s, "
            "resolved_s, channel, needs_dispatch, visits FROM incidents WHERE device_id IN :ids"
        ).bindparams(expanding),
        {"ids": ids},
    )
    for device_id, id_, code, fault, detect, ack, respond, restored, resolved, channel, nd, visits in result:
        per_device[device_id].append(
            IncidentRow(id_, code, fault, detect, ack, respond, restored, resolved, channel, bool(nd), visits)
        )
    rows = [
        m.row(d, month) for d, incidents in per_device.items() for month, m in build_months(incidents).items()
    ]
    if rows:
        columns = ("device_id", "month_s", "lo_s", "hi_s", *COLUMNS)
        await session.execute(
            text(
                f"INSERT INTO kpi_incident_months ({', '.join(columns)}) "  # noqa: S608
                f"VALUES ({', '.join(':' + c for c in columns)})"
            ),
            rows,
        )
