"""State rollups: each device's state timeline as prefix sums, so a report's state time over
any range is two index lookups per device instead of a pass over its intervals.

``kpi_state_segments`` (migration 0008) tiles a device's time from its first interval on into
segments, each at one precedence level (1 unplanned down, 2 external down, 3 planned
maintenance, 4 running/degraded, 5 unknown — the reference's ``state_levels``, overlaps
resolved by precedence); the last segment has no end. A segment stores ``c1``…``c4``: the
device's seconds at level ≤ k before its start. The seconds at level ≤ k in [a, e) are
``C_k(e) - C_k(a)`` with ``C_k(x) = c_k + (x - start) · [lvl ≤ k]`` from the segment holding x
(none: x is before the device's first interval, C_k = 0). That is exact for 24x7 time;
contract hours are not a difference of prefix sums, so for them ``kpi_contract_months`` holds
each whole UTC month's seconds at level ≤ k inside the contract hours of the customer the
device spent the month with (:func:`contract_months`); a report sums those months and reads
the rest (partial months, months of a move, changed contract hours) from the segments.

The rollup depends on a device's state intervals only: customer moves, decommissioning and
contract hours are applied by the report around the lookups. Triggers on ``state_intervals``
mark a device dirty from the earliest start a write touched (``kpi_rollup_dirty``); a report
reads dirty devices raw, and :func:`refresh_rollups` rebuilds them from that point.
"""

# SQL here is assembled from fixed fragments of this module; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from server import clock
from server.kpi.calendar import ContractHours, Schedule, contract_windows, parse_contract_hours
from server.kpi.incident_rollups import month_start, next_month_start
from server.kpi.records import StateRecord
from server.kpi.reference import state_levels
from server.kpi.sql import Dialect

__all__ = [
    "LEVELS",
    "Segment",
    "build_segments",
    "contract_months",
    "hours_key",
    "mark_customer_devices",
    "refresh_rollups",
]

LEVELS = 4  # known levels; level 5 is unknown
UNKNOWN = LEVELS + 1
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Segment:
    start_s: float
    lvl: int
    cum: tuple[float, float, float, float]  # seconds at level <= 1..4 before start_s


def build_segments(
    states: Iterable[StateRecord],
    *,
    since: float = -math.inf,
    cum: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
) -> list[Segment]:
    """The segments of one device's intervals from ``since`` on (all of them when -inf),
    starting from the prefix sums ``cum`` at ``since``. From a finite ``since`` the first
    segment starts exactly there (it replaces the segments from there on)."""
    events: dict[float, list[int]] = {}  # time -> per level: +starts, -ends
    for lvl0, pieces in enumerate(state_levels(states)):
        for start, end in pieces:
            if end <= since or end <= start:
                continue
            events.setdefault(max(start, since), [0] * LEVELS)[lvl0] += 1
            if end != math.inf:
                events.setdefault(end, [0] * LEVELS)[lvl0] -= 1
    if math.isfinite(since):
        events.setdefault(since, [0] * LEVELS)
    active = [0] * LEVELS
    sums = list(cum)
    out: list[Segment] = []
    for at in sorted(events):
        for k, delta in enumerate(events[at]):
            active[k] += delta
        lvl = next((k + 1 for k in range(LEVELS) if active[k] > 0), UNKNOWN)
        if out:
            last = out[-1]
            if last.lvl == lvl:
                continue
            length = at - last.start_s
            sums = [s + (length if last.lvl <= k + 1 else 0.0) for k, s in enumerate(sums)]
        out.append(Segment(at, lvl, (sums[0], sums[1], sums[2], sums[3])))
    return out


def hours_key(raw: Any) -> str:
    """The canonical text of a customer's contract hours: a contract month row is valid only
    while its customer's contract hours still have this key."""
    return json.dumps(raw, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Tenure:
    """A device's time with one customer: [start, end), the customer's contract hours."""

    start: float
    end: float
    customer_id: int
    hours: ContractHours
    key: str


def contract_months(
    segments: Sequence[tuple[float, int]], tenures: Sequence[Tenure], since: float, until: float
) -> list[tuple[float, float, Tenure, tuple[float, float, float, float]]]:
    """The whole UTC months from ``since``'s to ``until``'s that lie in one tenure with
    contract hours: (month start, month end, tenure, seconds at level ≤ 1..4 inside the
    contract hours) from the device's segments (start, level), sorted, the last without end."""
    out: list[tuple[float, float, Tenure, tuple[float, float, float, float]]] = []
    schedules: dict[tuple[int, float], Schedule] = {}
    starts = [start for start, _ in segments]
    ms = month_start(since)
    while segments and ms <= until:
        me = next_month_start(ms)
        tenure = next((t for t in tenures if t.start <= ms and me <= t.end), None)
        if tenure is not None and me > starts[0]:
            schedule = schedules.get((tenure.customer_id, ms))
            if schedule is None:
                schedule = schedules[tenure.customer_id, ms] = Schedule(
                    contract_windows(tenure.hours, ms, me)
                )
            u = [0.0] * LEVELS
            k = max(0, bisect_right(starts, ms) - 1)  # the segment holding the month's start
            while k < len(segments) and starts[k] < me:
                lvl = segments[k][1]
                a, e = max(ms, starts[k]), min(me, starts[k + 1] if k + 1 < len(starts) else me)
                if lvl <= LEVELS and e > a:
                    share = schedule.between(a, e)
                    for level in range(lvl - 1, LEVELS):
                        u[level] += share
                k += 1
            out.append((ms, me, tenure, (u[0], u[1], u[2], u[3])))
        ms = me
    return out


async def mark_customer_devices(session: AsyncSession, customer_id: int) -> None:
    """Mark every device that is or was with the customer dirty from the beginning: its
    contract months were built under contract hours that just changed."""
    devices = (
        "SELECT id FROM devices WHERE customer_id = :c "
        "UNION SELECT device_id FROM device_assignments WHERE customer_id = :c"
    )
    await session.execute(
        text(f"UPDATE kpi_rollup_dirty SET since_s = -1e300 WHERE device_id IN ({devices})"),
        {"c": customer_id},
    )
    await session.execute(
        text(
            f"INSERT INTO kpi_rollup_dirty (device_id, since_s) SELECT x.id, -1e300 FROM ({devices}) x "
            "WHERE x.id NOT IN (SELECT device_id FROM kpi_rollup_dirty)"
        ),
        {"c": customer_id},
    )


async def refresh_rollups(
    session: AsyncSession, device_ids: Sequence[str] | None = None, *, limit: int | None = None
) -> int:
    """Rebuild the segments of the dirty devices (of ``device_ids`` when given; at most ``limit``
    of them), each from the segment holding its dirty mark on. Returns the number of devices
    rebuilt. The dirty mark is removed first, so a write committed meanwhile leaves the device
    dirty, never stale."""
    where = "" if device_ids is None else " WHERE device_id IN :ids"
    cap = "" if limit is None else " ORDER BY device_id LIMIT :limit"
    statement = text(f"SELECT device_id, since_s FROM kpi_rollup_dirty{where}{cap}")
    if device_ids is not None:
        if not device_ids:
            return 0
        statement = statement.bindparams(bindparam("ids", expanding=True))
    params: dict[str, Any] = {} if device_ids is None else {"ids": list(device_ids)}
    if limit is not None:
        params["limit"] = int(limit)
    dirty = (await session.execute(statement, params)).all()
    for offset in range(0, len(dirty), _CHUNK):
        await _rebuild({d: s for d, s in dirty[offset : offset + _CHUNK]}, session)  # noqa: C416 - rows
    return len(dirty)


async def _rebuild(dirty: dict[str, float], session: AsyncSession) -> None:
    ids = list(dirty)
    expanding: BindParameter[Any] = bindparam("ids", expanding=True)
    await session.execute(
        text("DELETE FROM kpi_rollup_dirty WHERE device_id IN :ids").bindparams(expanding), {"ids": ids}
    )
    # the segment holding each dirty mark: kept, and the new segments continue from it
    anchors: dict[str, tuple[float, tuple[float, ...]]] = {}
    for device_id, since in dirty.items():
        row = (
            await session.execute(
                text(
                    "SELECT start_s, c1, c2, c3, c4 FROM kpi_state_segments WHERE device_id = :device "
                    "AND start_s <= :since ORDER BY start_s DESC LIMIT 1"
                ),
                {"device": device_id, "since": since},
            )
        ).first()
        if row is not None:
            anchors[device_id] = (row[0], tuple(row[1:]))
    await session.execute(
        text("DELETE FROM kpi_state_segments WHERE device_id = :device AND start_s >= :since"),
        [{"device": d, "since": anchors[d][0] if d in anchors else -1e300} for d in ids],
    )
    states: dict[str, list[StateRecord]] = {d: [] for d in ids}
    result = await session.execute(
        text(
            "SELECT device_id, state, start_s, end_s, external, "
            f"{Dialect(session.get_bind().dialect.name).epoch('planned_end')} FROM state_intervals "
            "WHERE device_id IN :ids AND (end_s IS NULL OR end_s > :since)"
        ).bindparams(expanding),
        {"ids": ids, "since": min((anchors[d][0] if d in anchors else -1e300) for d in ids)},
    )
    for device_id, state, start_s, end_s, external, planned_end in result:
        states[device_id].append(StateRecord(device_id, state, start_s, end_s, bool(external), planned_end))
    rows_out: list[dict[str, Any]] = []
    for device_id in ids:
        since, cum = anchors.get(device_id, (-math.inf, (0.0, 0.0, 0.0, 0.0)))
        for seg in build_segments(states[device_id], since=since, cum=cum):
            c1, c2, c3, c4 = seg.cum
            rows_out.append(
                {
                    "device": device_id,
                    "start": seg.start_s,
                    "lvl": seg.lvl,
                    "c1": c1,
                    "c2": c2,
                    "c3": c3,
                    "c4": c4,
                }
            )
    if rows_out:
        await session.execute(
            text(
                "INSERT INTO kpi_state_segments (device_id, start_s, lvl, c1, c2, c3, c4) "
                "VALUES (:device, :start, :lvl, :c1, :c2, :c3, :c4)"
            ),
            rows_out,
        )

    await _rebuild_contract_months(session, {d: anchors[d][0] if d in anchors else -math.inf for d in ids})


async def _tenures(session: AsyncSession, ids: list[str]) -> dict[str, list[Tenure]]:
    """Each device's customer periods with contract hours, as the report's kpi_pieces has
    them: a recorded period lasts until the next, the first reaches back to the beginning;
    a device with none has its current customer throughout. Only these devices' customers
    are read (this runs on every write of a device's state)."""
    expanding: BindParameter[Any] = bindparam("ids", expanding=True)
    periods: dict[str, list[tuple[float, int | None]]] = {d: [] for d in ids}
    rows = await session.execute(
        text(
            "SELECT device_id, valid_from_s, customer_id FROM device_assignments WHERE device_id IN :ids "
            "ORDER BY device_id, valid_from_s, id"
        ).bindparams(expanding),
        {"ids": ids},
    )
    for device_id, valid_from, customer_id in rows:
        periods[device_id].append((valid_from, customer_id))
    current = await session.execute(
        text("SELECT id, customer_id FROM devices WHERE id IN :ids").bindparams(expanding), {"ids": ids}
    )
    for device_id, customer_id in current:
        if not periods[device_id]:
            periods[device_id].append((-math.inf, customer_id))
    customers = {c for spans in periods.values() for _, c in spans if c is not None}
    hours: dict[int, tuple[ContractHours, str]] = {}
    if customers:
        result = await session.execute(
            text("SELECT id, name, contract_hours FROM customers WHERE id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": sorted(customers)},
        )
        for cid, name, raw in result:
            value = json.loads(raw) if isinstance(raw, str) else raw
            parsed = parse_contract_hours(value, name)
            if parsed is not None:
                hours[cid] = (parsed, hours_key(value))
    out: dict[str, list[Tenure]] = {}
    for device_id, spans in periods.items():
        tenures = out[device_id] = []
        for k, (start, customer_id) in enumerate(spans):
            end = spans[k + 1][0] if k + 1 < len(spans) else math.inf
            if customer_id in hours and end > start:
                contract, key = hours[customer_id]
                tenures.append(Tenure(-math.inf if k == 0 else start, end, customer_id, contract, key))
    return out


async def _rebuild_contract_months(session: AsyncSession, since: dict[str, float]) -> None:
    """Rebuild the contract months of the devices from the month holding each ``since`` on,
    up to the month holding now or the device's last segment, whichever is later (a whole
    month in a report's period is in the past of its as-of time, and the last segment lasts
    until new data marks the device dirty)."""
    ids = list(since)
    tenures = await _tenures(session, ids)
    with_contract = [d for d in ids if tenures[d]]
    expanding: BindParameter[Any] = bindparam("ids", expanding=True)
    await session.execute(
        text("DELETE FROM kpi_contract_months WHERE device_id = :device AND month_s >= :ms"),
        [{"device": d, "ms": month_start(since[d]) if math.isfinite(since[d]) else -1e300} for d in ids],
    )
    if not with_contract:
        return
    segments: dict[str, list[tuple[float, int]]] = {d: [] for d in with_contract}
    result = await session.execute(
        text(
            "SELECT device_id, start_s, lvl FROM kpi_state_segments WHERE device_id IN :ids ORDER BY device_id, start_s"
        ).bindparams(expanding),
        {"ids": with_contract},
    )
    for device_id, start, lvl in result:
        segments[device_id].append((start, lvl))
    now = clock.now().timestamp()
    rows: list[dict[str, Any]] = []
    for device_id in with_contract:
        mine = segments[device_id]
        if not mine:
            continue
        first = since[device_id] if math.isfinite(since[device_id]) else mine[0][0]
        for ms, me, tenure, u in contract_months(mine, tenures[device_id], first, max(now, mine[-1][0])):
            rows.append(
                {
                    "device": device_id,
                    "ms": ms,
                    "me": me,
                    "customer": tenure.customer_id,
                    "key": tenure.key,
                    "u1": u[0],
                    "u2": u[1],
                    "u3": u[2],
                    "u4": u[3],
                }
            )
    if rows:
        await session.execute(
            text(
                "INSERT INTO kpi_contract_months (device_id, month_s, month_e, customer_id, hours_key, u1, u2, u3, u4) "
                "VALUES (:device, :ms, :me, :customer, :key, :u1, :u2, :u3, :u4)"
            ),
            rows,
        )
