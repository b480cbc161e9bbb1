"""SQL building blocks for :mod:`server.kpi.query`: dialect spellings, the temporary tables a
report works with, and how SQLite is steered to the right index.

Temporary tables (per connection, emptied after each report):

- ``kpi_buckets (b, bs, be)`` — the report's buckets: one for [t0, te), or its weeks/months;
- ``kpi_ibuckets (b, bs, be, sgn)`` — the buckets of the incident steps: the report's (sign +1)
  and the parts outside P of a partial month the incident rollups serve whole (sign -1);
- ``kpi_days (cal, day, cum, w1s, w1e, …)`` — per calendar and UTC day (epoch // 86400): the
  scheduled time before the day and the day's scheduled pieces, so C(x) — scheduled time
  before x — is an equality join and arithmetic;
- ``kpi_pieces (device_id, customer_id, site_id, model, pf, pt, dec_s, kept, model_kept)`` —
  every device's customer/site periods [pf, pt) (the customer *at the time*), ``kept`` when the
  report's filters keep the period;
- ``kpi_incidents`` — the incidents a report can touch (resolved, opened, failed or open in P,
  or a failure reaching into P), read once through the indexes, with the device's groups at
  the incident's (clamped) t_fault;
- ``kpi_unserved (device_id, ms, me)`` — the devices and months whose incidents resolved in P
  are read raw although P covers their month (incident rollup stale, or straddling a move);
- ``kpi_months (ms, me, b)`` — the whole UTC months of P, each inside bucket b;
- ``kpi_calendars (cal, hkey)`` — the contract hours in scope and their key (contract months
  built under other contract hours are not used);
- ``kpi_state_raw (device_id, pf, lo, hi)`` — the ranges of contract-hours pieces read from the
  state segments: all of a piece but its whole months served by ``kpi_contract_months``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import column, delete, insert, table, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.kpi.calendar import Bucket, ContractHours, contract_windows

__all__ = [
    "CAL_24X7",
    "OPEN_END",
    "Dialect",
    "create_temporary_tables",
    "fill_days",
    "share_above",
    "share_below",
]

OPEN_END = 1e18  # an interval without an end, in SQL (the reference uses infinity)
CAL_24X7 = -1
_REAL = "DOUBLE PRECISION"

_TABLES = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS kpi_buckets (b INTEGER, bs {_REAL}, be {_REAL})",
    f"CREATE TEMPORARY TABLE IF NOT EXISTS kpi_ibuckets (b INTEGER, bs {_REAL}, be {_REAL}, sgn INTEGER)",
    "CREATE TEMPORARY TABLE IF NOT EXISTS kpi_days (cal INTEGER, day BIGINT, cum {real}, {slots})".format(
        real=_REAL, slots=", ".join(f"w{k}s {_REAL}, w{k}e {_REAL}" for k in range(1, 5))
    ),
    "CREATE INDEX IF NOT EXISTS kpi_days_cal_day ON kpi_days (cal, day)",
    f"""CREATE TEMPORARY TABLE IF NOT EXISTS kpi_incidents (
        id INTEGER, device_id VARCHAR(64), customer_id INTEGER, site_id INTEGER, model VARCHAR(256),
        code VARCHAR(256), failure INTEGER, fs {_REAL}, ds {_REAL}, acs {_REAL}, rps {_REAL},
        rss {_REAL}, rvs {_REAL}, channel VARCHAR(16), nd INTEGER, ru INTEGER, visits INTEGER,
        cost {_REAL}, kept INTEGER)""",
    f"""CREATE TEMPORARY TABLE IF NOT EXISTS kpi_pieces (
        device_id VARCHAR(64), customer_id INTEGER, site_id INTEGER, model VARCHAR(256),
        pf {_REAL}, pt {_REAL}, dec_s {_REAL}, kept INTEGER, model_kept INTEGER)""",
    "CREATE INDEX IF NOT EXISTS kpi_pieces_device_pf ON kpi_pieces (device_id, pf)",
    f"CREATE TEMPORARY TABLE IF NOT EXISTS kpi_unserved (device_id VARCHAR(64), ms {_REAL}, me {_REAL})",
    "CREATE INDEX IF NOT EXISTS kpi_unserved_device ON kpi_unserved (device_id, ms)",
    f"CREATE TEMPORARY TABLE IF NOT EXISTS kpi_months (ms {_REAL}, me {_REAL}, b INTEGER)",
    "CREATE TEMPORARY TABLE IF NOT EXISTS kpi_calendars (cal INTEGER, hkey VARCHAR(512))",
    f"CREATE TEMPORARY TABLE IF NOT EXISTS kpi_state_raw (device_id VARCHAR(64), pf {_REAL}, lo {_REAL}, hi {_REAL})",
)
TEMPORARY = (
    "kpi_buckets",
    "kpi_ibuckets",
    "kpi_days",
    "kpi_incidents",
    "kpi_pieces",
    "kpi_unserved",
    "kpi_months",
    "kpi_calendars",
    "kpi_state_raw",
)
DAY = 86400
SLOTS = 4  # scheduled pieces per UTC day: one window per local day touches at most three


class Dialect:
    """The few spellings that differ between SQLite and PostgreSQL."""

    def __init__(self, name: str) -> None:
        if name not in ("sqlite", "postgresql"):
            raise NotImplementedError(f"database backend {name!r} is not supported")
        self.pg = name == "postgresql"

    @property
    def materialized(self) -> str:
        """Compute a CTE once (PostgreSQL would inline it; SQLite flattens it into each row)."""
        return "MATERIALIZED "

    def greatest(self, *args: str) -> str:
        return f"{'greatest' if self.pg else 'max'}({', '.join(args)})"

    def least(self, *args: str) -> str:
        return f"{'least' if self.pg else 'min'}({', '.join(args)})"

    def nonneg(self, expression: str) -> str:
        return self.greatest("0", expression)

    def epoch(self, column: str) -> str:
        """Epoch seconds of a UtcDateTime column (exact to the microsecond on both)."""
        if self.pg:
            return f"CAST(EXTRACT(EPOCH FROM {column}) AS DOUBLE PRECISION)"
        # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff' (naive UTC): whole seconds + fraction
        return f"(CAST(strftime('%s', {column}) AS REAL) + CAST(substr({column}, 20) AS REAL))"

    def hide(self, column: str) -> str:
        """``+column`` on SQLite: its planner will not use an index on the column for this
        term (it has no range statistics; :func:`share_below` decides instead)."""
        return column if self.pg else f"+{column}"


def share_below(lo: float, hi: float, bound: float) -> float:
    """Estimated share of values in [lo, hi] below ``bound`` (uniform)."""
    return 1.0 if hi <= lo else min(1.0, max(0.0, (bound - lo) / (hi - lo)))


def share_above(lo: float, hi: float, bound: float) -> float:
    return 1.0 if hi <= lo else min(1.0, max(0.0, (hi - bound) / (hi - lo)))


async def create_temporary_tables(
    session: AsyncSession,
    dialect: Dialect,
    *,
    cuts: Sequence[Bucket],
    t0: float,
    te: float,
) -> None:
    """Create (once per connection) and fill ``kpi_buckets``; ``kpi_days`` is filled on demand
    (:func:`fill_days`) for the spans read raw."""
    if dialect.pg:  # mid-sized analytic statements: no JIT, sorts in memory
        await session.execute(text("SET LOCAL jit = off"))
        await session.execute(text("SET LOCAL work_mem = '64MB'"))
    else:  # the default 2 MB page cache makes the sorts of a big report spill and re-read
        await session.execute(text("PRAGMA cache_size = -65536"))
    for statement in _TABLES:
        await session.execute(text(statement))
    await empty_temporary_tables(session)
    if cuts:
        for name in ("kpi_buckets", "kpi_ibuckets"):
            await session.execute(
                insert(table(name, column("b"), column("bs"), column("be"))),
                [{"b": b.index, "bs": b.start, "be": b.end} for b in cuts],
            )
        await session.execute(text("UPDATE kpi_ibuckets SET sgn = 1"))
    if dialect.pg:
        await session.execute(text("ANALYZE kpi_buckets"))
        await session.execute(text("ANALYZE kpi_ibuckets"))


async def fill_days(
    session: AsyncSession, dialect: Dialect, spans: Sequence[tuple[int, ContractHours, float, float]]
) -> None:
    """Fill ``kpi_days`` for each (calendar, span [lo, hi)): the spans of a calendar are days
    apart, and C(x) differences are taken within one span (each has its own origin)."""
    days: list[dict[str, Any]] = []
    for cal, hours, lo, hi in spans:
        days += calendar_days(cal, contract_windows(hours, lo, hi), lo, hi)
    if days:
        await session.execute(insert(table("kpi_days", *(column(name) for name in days[0]))), days)
        if dialect.pg:
            await session.execute(text("ANALYZE kpi_days"))


def calendar_days(
    cal: int, windows: Sequence[tuple[float, float]], t0: float, te: float
) -> list[dict[str, Any]]:
    """kpi_days rows of one calendar: every UTC day from t0's to te's, with the scheduled time
    before it (``cum``) and its scheduled pieces (empty slots are [0, 0))."""
    pieces: dict[int, list[tuple[float, float]]] = {}
    for ws, we in windows:
        start = ws
        while start < we:
            day = int(start // DAY)
            end = min(we, (day + 1) * DAY)
            pieces.setdefault(day, []).append((start, end))
            start = end
    rows: list[dict[str, Any]] = []
    cum = 0.0
    for day in range(int(t0 // DAY), int(te // DAY) + 1):
        slots = pieces.get(day, [])
        if len(slots) > SLOTS:
            raise ValueError(f"calendar {cal}: {len(slots)} scheduled pieces in one day (at most {SLOTS})")
        row: dict[str, Any] = {"cal": cal, "day": day, "cum": cum}
        for k in range(SLOTS):
            ws, we = slots[k] if k < len(slots) else (0.0, 0.0)
            row[f"w{k + 1}s"], row[f"w{k + 1}e"] = ws, we
        rows.append(row)
        cum += sum(we - ws for ws, we in slots)
    return rows


async def empty_temporary_tables(session: AsyncSession) -> None:
    for name in TEMPORARY:
        await session.execute(delete(table(name)))
