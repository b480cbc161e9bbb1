"""State rollups: each device's state timeline as prefix sums, so a report's state time over
any range is two index lookups per device instead of a pass over its intervals.

``kpi_state_segments`` (migration 0008) tiles a device's time from its first interval on into
segments, each at one precedence level (1 unplanned down, 2 external down, 3 planned
maintenance, 4 running/degraded, 5 unknown — the reference's ``state_levels``, overlaps
resolved by precedence); the last segment has no end. A segment stores ``c1``…``c4``: the
device's seconds at level ≤ k before its start. The seconds at level ≤ k in [a, e) are
``C_k(e) - C_k(a)`` with ``C_k(x) = c_k + (x - start) · [lvl ≤ k]`` from the segment holding x
(none: x is before the device's first interval, C_k = 0). That is exact for 24x7 time;
contract hours are not a difference of prefix sums, so those devices are read raw.

The rollup depends on a device's state intervals only: customer moves, decommissioning and
contract hours are applied by the report around the lookups. Triggers on ``state_intervals``
mark a device dirty from the earliest start a write touched (``kpi_rollup_dirty``); a report
reads dirty devices raw, and :func:`refresh_rollups` rebuilds them from that point.
"""

# SQL here is assembled from fixed fragments of this module; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.kpi.records import StateRecord
from server.kpi.reference import state_levels
from server.kpi.sql import Dialect

__all__ = ["LEVELS", "Segment", "build_segments", "refresh_rollups"]

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


async def refresh_rollups(
    session: AsyncSession, device_ids: Sequence[str] | None = None, *, limit: int | None = None
) -> int:
    """Rebuild the segments of the dirty devices (of ``device_ids`` when given; at most ``limit``
    of them), each from the segment holding its dirty mark on. Returns the number of devices
    rebuilt. The dirty mark is removed first, so a write committed meanwhile leaves the device
    dirty, never stale."""
    where = "" if device_ids is None else " WHERE device_id IN :ids"
    cap = "" if limit is None else f" ORDER BY device_id LIMIT {int(limit)}"
    statement = text(f"SELECT device_id, since_s FROM kpi_rollup_dirty{where}{cap}")
    if device_ids is not None:
        if not device_ids:
            return 0
        statement = statement.bindparams(bindparam("ids", expanding=True))
    params: dict[str, Any] = {} if device_ids is None else {"ids": list(device_ids)}
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
