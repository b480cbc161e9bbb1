"""Time for the KPIs: week and month buckets, and contract-hour windows, as UTC epoch seconds.

Weeks are ISO weeks (Monday 00:00 UTC); months are calendar months in UTC. A bucket is cut to
the report period, so the first and last may be partial. Contract hours are a customer's
covered time (``Customer.contract_hours``)::

    {"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "18:00", "tz": "Europe/Berlin"}

``days`` are local weekdays, 0 = Monday; ``end`` "24:00" is midnight; an ``end`` at or before
``start`` runs past midnight into the next day. None means 24x7.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.errors import InvalidInput
from server.kpi.intervals import Interval

__all__ = [
    "Bucket",
    "ContractHours",
    "Schedule",
    "buckets",
    "contract_windows",
    "parse_contract_hours",
    "to_datetime",
]

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass(frozen=True, slots=True)
class Bucket:
    index: int
    start: float
    end: float
    label: str


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def buckets(t0: float, te: float, grain: str | None) -> list[Bucket]:
    """``[t0, te)`` cut into ``grain`` ("week", "month") buckets, or one bucket for None."""
    if grain is None:
        return [Bucket(0, t0, max(t0, te), "")]
    out: list[Bucket] = []
    cursor = to_datetime(t0)
    day = cursor.date()
    if grain == "week":
        boundary = datetime.combine(_week_start(day), time(), UTC)
    elif grain == "month":
        boundary = datetime(day.year, day.month, 1, tzinfo=UTC)
    else:
        raise ValueError(f"unknown grain {grain!r}")
    while boundary.timestamp() < te:
        if grain == "week":
            following = boundary + timedelta(days=7)
            year, week, _ = boundary.date().isocalendar()
            label = f"{year}-W{week:02d}"
        else:
            following = datetime(boundary.year + boundary.month // 12, boundary.month % 12 + 1, 1, tzinfo=UTC)
            label = f"{boundary.year}-{boundary.month:02d}"
        start, end = max(t0, boundary.timestamp()), min(te, following.timestamp())
        if end > start:
            out.append(Bucket(len(out), start, end, label))
        boundary = following
    return out


@dataclass(frozen=True, slots=True)
class ContractHours:
    days: frozenset[int]
    start: time
    end: time | None  # None: midnight at the end of the day ("24:00")
    tz: ZoneInfo


def _clock(value: Any, customer: str, key: str) -> time | None:
    if not isinstance(value, str) or not _HHMM.match(value):
        raise InvalidInput(
            f"customer {customer!r}: contract_hours.{key} must be 'HH:MM' (00:00-24:00), got {value!r}",
            field="contract_hours",
        )
    if value == "24:00":
        return None
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def parse_contract_hours(raw: Mapping[str, Any] | None, customer: str) -> ContractHours | None:
    """A customer's ``contract_hours`` JSON, checked; None (or {}) means 24x7."""
    if not raw:
        return None
    days = raw.get("days", [0, 1, 2, 3, 4, 5, 6])
    if not isinstance(days, list) or not all(isinstance(d, int) and 0 <= d <= 6 for d in days):
        raise InvalidInput(
            f"customer {customer!r}: contract_hours.days must be a list of weekdays 0 (Monday) to 6",
            field="contract_hours",
        )
    start = _clock(raw.get("start", "00:00"), customer, "start")
    if start is None:
        raise InvalidInput(
            f"customer {customer!r}: contract_hours.start cannot be 24:00", field="contract_hours"
        )
    try:
        tz = ZoneInfo(str(raw.get("tz", "UTC")))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(
            f"customer {customer!r}: contract_hours.tz {raw.get('tz')!r} is not a known time zone",
            field="contract_hours",
        ) from exc
    return ContractHours(frozenset(days), start, _clock(raw.get("end", "24:00"), customer, "end"), tz)


def contract_windows(hours: ContractHours, t0: float, te: float) -> list[Interval]:
    """The covered windows inside ``[t0, te)``, sorted and disjoint."""
    if te <= t0:
        return []
    first = to_datetime(t0).astimezone(hours.tz).date() - timedelta(days=1)
    last = to_datetime(te).astimezone(hours.tz).date()
    out: list[Interval] = []
    day = first
    while day <= last:
        if day.weekday() in hours.days:
            begin = datetime.combine(day, hours.start, hours.tz)
            if hours.end is None or hours.end <= hours.start:
                finish = datetime.combine(day + timedelta(days=1), hours.end or time(), hours.tz)
            else:
                finish = datetime.combine(day, hours.end, hours.tz)
            start, end = max(t0, begin.timestamp()), min(te, finish.timestamp())
            if end > start:
                if out and start <= out[-1][1]:  # back-to-back days: one window
                    out[-1] = (out[-1][0], max(out[-1][1], end))
                else:
                    out.append((start, end))
        day += timedelta(days=1)
    return out


class Schedule:
    """Scheduled time before any instant, from sorted disjoint windows: a bisect and a prefix
    sum, so the scheduled time of [a, b) is two lookups however many windows it spans."""

    def __init__(self, windows: Sequence[Interval]) -> None:
        self.starts = [start for start, _ in windows]
        self.ends = [end for _, end in windows]
        self.cum = [0.0]
        for start, end in windows:
            self.cum.append(self.cum[-1] + (end - start))

    def before(self, x: float) -> float:
        k = bisect_right(self.starts, x)  # windows[:k] start at or before x
        if k == 0:
            return 0.0
        return self.cum[k - 1] + min(x, self.ends[k - 1]) - self.starts[k - 1]

    def between(self, a: float, b: float) -> float:
        return self.before(b) - self.before(a) if b > a else 0.0
