"""State rollups (server/kpi/rollups.py): the prefix-sum segments give the reference's nested
unions, stay right when history is rewritten (late data), and the report read through them
equals the raw report and the reference engine, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.customers.service import update_customer
from server.db.models import Customer, KpiContractMonth, KpiRollupDirty, KpiStateSegment, StateInterval
from server.kpi import GroupBy, ReportSpec, compute_report, load_dataset, reference_report
from server.kpi import intervals as iv
from server.kpi.generate import FleetShape, generate
from server.kpi.records import StateRecord, insert_dataset
from server.kpi.reference import state_levels
from server.kpi.rollups import Segment, build_segments, refresh_rollups
from tests.server.incident_factory import Device as Dev
from tests.server.incident_factory import at, feed, feed_each, tracker
from tests.server.kpi.test_equivalence import SHAPES, differences, specs

STATES = ("running", "degraded", "down", "maintenance", "unknown")


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def random_states(rng: random.Random, n: int) -> list[StateRecord]:
    """Overlapping intervals of every kind, some open, some maintenance with overruns."""
    out = []
    for _ in range(n):
        start = rng.uniform(0, 1000)
        end = None if rng.random() < 0.1 else start + rng.uniform(0, 200)
        state = rng.choice(STATES)
        planned = start + rng.uniform(0, 150) if state == "maintenance" and rng.random() < 0.6 else None
        out.append(StateRecord("d", state, start, end, rng.random() < 0.3, planned))
    return out


def cumulative(segments: list[Segment], x: float, k: int) -> float:
    """C_k(x) as the report's SQL computes it."""
    holding = [s for s in segments if s.start_s <= x]
    if not holding:
        return 0.0
    seg = holding[-1]
    return seg.cum[k - 1] + (x - seg.start_s if seg.lvl <= k else 0.0)


def test_segments_give_the_nested_unions_of_the_reference() -> None:
    rng = random.Random(3)
    for _ in range(200):
        states = random_states(rng, rng.randint(0, 12))
        levels = state_levels(states)
        nested = [iv.union(itertools.chain.from_iterable(levels[: k + 1])) for k in range(4)]
        segments = build_segments(states)
        assert all(a.start_s < b.start_s for a, b in itertools.pairwise(segments))
        for _ in range(5):
            a = rng.uniform(-100, 1300)
            e = a + rng.uniform(0, 600)
            for k in range(1, 5):
                expected = iv.length(iv.intersect(nested[k - 1], [(a, e)]))
                assert math.isclose(
                    cumulative(segments, e, k) - cumulative(segments, a, k), expected, abs_tol=1e-6
                )


def test_rebuilding_from_a_point_equals_a_full_build() -> None:
    """Late data rewrites the history from some time on: the kept prefix plus a rebuild from
    the segment holding that time equals building everything again."""
    rng = random.Random(5)
    for _ in range(200):
        before = random_states(rng, rng.randint(1, 10))
        cut = rng.uniform(0, 1100)
        after = [s for s in before if s.start_s < cut] + [
            s for s in random_states(rng, rng.randint(0, 6)) if s.start_s >= cut
        ]
        old = build_segments(before)
        anchor = [s for s in old if s.start_s <= cut]
        if anchor:
            kept = [s for s in old if s.start_s < anchor[-1].start_s]
            rebuilt = kept + build_segments(after, since=anchor[-1].start_s, cum=anchor[-1].cum)
        else:
            rebuilt = build_segments(after)
        full = build_segments(after)
        for x in [rng.uniform(-50, 1400) for _ in range(20)]:
            for k in range(1, 5):
                assert math.isclose(cumulative(rebuilt, x, k), cumulative(full, x, k), abs_tol=1e-6)


async def _check(sessions: async_sessionmaker[AsyncSession], *, rolled: bool) -> None:
    """Every spec: the report (rollups on) equals the raw report and the reference."""
    async with sessions() as session:
        stored = await load_dataset(session)
        dirty = await session.scalar(select(func.count()).select_from(KpiRollupDirty))
    assert (dirty == 0) is rolled
    problems: list[str] = []
    for spec in specs(stored):
        async with sessions() as session:
            with_rollups = await compute_report(session, spec)
            raw = await compute_report(session, spec, rollups=False)
        problems += [f"{spec}: {p}" for p in differences(reference_report(stored, spec), with_rollups)[:3]]
        problems += [f"{spec} raw: {p}" for p in differences(raw, with_rollups)[:3]]
    assert problems == []


async def test_rollup_reports_equal_the_raw_reports_and_the_reference(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Overlapping intervals, contract hours, moves between customers, decommissioning, periods
    cut mid-day; then late data rewrites some devices' history (read raw while dirty)."""
    shape = FleetShape(
        devices=16,
        customers=4,
        days=60,
        seed=21,
        events_per_year=150,
        contract_share=0.3,
        overlap_share=0.4,
        decommission_share=0.2,
        late_start_share=0.2,
        move_share=0.4,
        overlapping_states=True,
    )
    async with sessions() as session:
        await insert_dataset(session, generate(shape))
        await session.commit()
    await _check(sessions, rolled=False)  # nothing built yet: all raw
    async with sessions() as session:
        assert await refresh_rollups(session) > 0
        await session.commit()
    await _check(sessions, rolled=True)
    # late data: a device's history from Jan 20 on is replaced (the writer's path), another one
    # gets an interval flagged external (an UPDATE), a third loses everything
    async with sessions() as session:
        devices = list(
            await session.scalars(
                select(StateInterval.device_id).distinct().order_by(StateInterval.device_id)
            )
        )
        late = utc(2026, 1, 20).timestamp()
        await session.execute(
            delete(StateInterval).where(StateInterval.device_id == devices[0], StateInterval.start_s >= late)
        )
        rows = []
        for n, state in enumerate(("down", "running", "maintenance", "running")):
            start = utc(2026, 1, 20 + 2 * n, 3)
            end = utc(2026, 1, 22 + 2 * n, 3) if n < 3 else None
            rows.append(
                {
                    "device_id": devices[0],
                    "state": state,
                    "start": start,
                    "end": end,
                    "start_s": start.timestamp(),
                    "end_s": None if end is None else end.timestamp(),
                    "external": False,
                    "planned_end": utc(2026, 1, 24, 20) if state == "maintenance" else None,
                }
            )
        await session.execute(insert(StateInterval), rows)
        await session.execute(
            update(StateInterval)
            .where(StateInterval.device_id == devices[1], StateInterval.state == "down")
            .values(external=True)
        )
        await session.execute(delete(StateInterval).where(StateInterval.device_id == devices[2]))
        await session.commit()
    async with sessions() as session:
        marked = set(await session.scalars(select(KpiRollupDirty.device_id)))
    assert marked == set(devices[:3])
    await _check(sessions, rolled=False)  # the three are read raw
    async with sessions() as session:
        assert await refresh_rollups(session) == 3
        await session.commit()
    await _check(sessions, rolled=True)
    # the incremental rebuild left what a rebuild from scratch gives
    async with sessions() as session:
        incremental = (
            (
                await session.execute(
                    select(KpiStateSegment).order_by(KpiStateSegment.device_id, KpiStateSegment.start_s)
                )
            )
            .scalars()
            .all()
        )
        snapshot = [(s.device_id, s.start_s, s.lvl, s.c1, s.c2, s.c3, s.c4) for s in incremental]
        months_before = await _contract_months(session)
        assert months_before, "contract months built"
        await session.execute(delete(KpiStateSegment))
        await session.execute(
            text(
                "INSERT INTO kpi_rollup_dirty (device_id, since_s) SELECT DISTINCT device_id, -1e300 FROM state_intervals"
            )
        )
        await refresh_rollups(session)
        fresh = (
            (
                await session.execute(
                    select(KpiStateSegment).order_by(KpiStateSegment.device_id, KpiStateSegment.start_s)
                )
            )
            .scalars()
            .all()
        )
        assert not any(s.device_id == devices[2] for s in fresh)
        assert len(snapshot) >= len(fresh)
        months_after = await _contract_months(session)
        assert [m[:5] for m in months_before] == [m[:5] for m in months_after]
        for old, new in zip(months_before, months_after, strict=True):
            assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(old[5:], new[5:], strict=True)), old
        for device in devices:
            mine = [s for s in snapshot if s[0] == device]
            theirs = [s for s in fresh if s.device_id == device]
            probe = [Segment(s[1], s[2], (s[3], s[4], s[5], s[6])) for s in mine]
            truth = [Segment(s.start_s, s.lvl, (s.c1, s.c2, s.c3, s.c4)) for s in theirs]
            for x in [seg.start_s + 1 for seg in truth + probe]:
                for k in range(1, 5):
                    assert math.isclose(cumulative(probe, x, k), cumulative(truth, x, k), abs_tol=1e-6), (
                        device
                    )


async def _contract_months(session: AsyncSession) -> list[tuple[object, ...]]:
    rows = await session.execute(
        select(KpiContractMonth).order_by(KpiContractMonth.device_id, KpiContractMonth.month_s)
    )
    return [
        (m.device_id, m.month_s, m.month_e, m.customer_id, m.hours_key, m.u1, m.u2, m.u3, m.u4)
        for m in rows.scalars()
    ]


async def test_contract_months_are_not_used_under_changed_contract_hours(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A customer's contract hours change after the contract months were built: reports read
    its devices from the segments (still equal to the reference) until they are rebuilt."""
    shape = FleetShape(devices=12, customers=3, days=70, seed=8, events_per_year=120, contract_share=1.0)
    async with sessions() as session:
        await insert_dataset(session, generate(shape))
        await session.commit()
        await refresh_rollups(session)
        await session.commit()
        built = await _contract_months(session)
    assert built
    spec = ReportSpec(utc(2026, 1, 1), utc(2026, 3, 1), group_by=GroupBy.CUSTOMER, as_of=utc(2026, 3, 10))
    async with sessions() as session:
        served = await compute_report(session, spec)
    assert served.timings["state_contract"] >= 0
    async with sessions() as session:
        customer = await session.get(Customer, built[0][3])
        assert customer is not None
        customer.contract_hours = {"days": [0, 1, 2], "start": "06:00", "end": "14:00", "tz": "Asia/Tokyo"}
        await session.commit()
    async with sessions() as session:
        stored = await load_dataset(session)
        changed = await compute_report(session, spec)
    assert differences(reference_report(stored, spec), changed) == []
    assert differences(served, changed) != []  # the change shows: the stale months were not used
    async with sessions() as session:  # the service marks the customer's devices: rebuilt under the new hours
        await update_customer(session, customer.id, {"contract_hours": customer.contract_hours}, actor="test")
        marked = set(await session.scalars(select(KpiRollupDirty.device_id)))
        assert {m[0] for m in built if m[3] == customer.id} <= marked
        await refresh_rollups(session)
        await session.commit()
        keys = {m[4] for m in await _contract_months(session) if m[3] == customer.id}
        rebuilt = await compute_report(session, spec)
    assert len(keys) == 1
    assert "Asia/Tokyo" in keys.pop()
    assert differences(reference_report(stored, spec), rebuilt) == []


async def test_every_write_path_marks_the_device_dirty(sessions: async_sessionmaker[AsyncSession]) -> None:
    """The triggers catch ORM flushes as well as Core statements, keeping the earliest start."""
    ds = generate(FleetShape(devices=2, customers=1, days=10, seed=2))
    async with sessions() as session:
        await insert_dataset(session, ds)
        await refresh_rollups(session)
        await session.commit()
    device = ds.devices[0].id
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(KpiRollupDirty)) == 0
        session.add(StateInterval(device_id=device, state="down", start=utc(2026, 1, 5), end=utc(2026, 1, 6)))
        await session.flush()
        assert await session.scalar(select(KpiRollupDirty.since_s)) == utc(2026, 1, 5).timestamp()
        await session.execute(
            update(StateInterval)
            .where(StateInterval.device_id == device, StateInterval.start_s < utc(2026, 1, 3).timestamp())
            .values(external=True)
        )
        first = min(s.start_s for s in ds.states if s.device_id == device)
        assert await session.scalar(select(KpiRollupDirty.since_s)) == first
        await session.commit()


async def test_a_period_inside_one_segment(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Both ends of a short period fall into the same segment (and into no segment before the
    device's first interval): still the reference's numbers."""
    ds = generate(SHAPES["plain"])
    async with sessions() as session:
        await insert_dataset(session, ds)
        await refresh_rollups(session)
        await session.commit()
    async with sessions() as session:
        stored = await load_dataset(session)
    first = min(s.start_s for s in stored.states)
    for start, end in (
        (datetime.fromtimestamp(first - 7200, UTC), datetime.fromtimestamp(first + 60, UTC)),
        (utc(2026, 2, 3, 10), utc(2026, 2, 3, 11)),
    ):
        spec = ReportSpec(start, end, group_by=GroupBy.CUSTOMER, as_of=utc(2026, 12, 1))
        async with sessions() as session:
            report = await compute_report(session, spec)
        assert differences(reference_report(stored, spec), report) == []


async def test_the_incidents_writer_keeps_the_rollup_current_through_late_data(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The late-data scenario of tests/server/test_incidents.py through the real writer: after
    each batch no device is left dirty, and the rollup report shows the downtime the buffered
    events imply (1,000 s), as the raw report does."""
    inc = tracker()
    dev = Dev("late-r")
    await feed_each(sessions, inc, dev.status(0), dev.status(1000, online=False, state=None, received=1000))
    await inc.sweep(sessions, now=at(2000))
    await feed(
        sessions,
        inc,
        dev.raised(1500, received=4000),
        dev.state(1500.1, "down", received=4000.01),
        dev.cleared(2500, received=4000.02),
        dev.state(2500, "running", received=4000.03),
        dev.status(3999, received=4000.1),
    )
    await inc.sweep(sessions, now=at(4400))
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(KpiRollupDirty)) == 0
        assert (await session.scalar(select(func.count()).select_from(KpiStateSegment)) or 0) > 0
    spec = ReportSpec(at(0), at(5000), as_of=at(5000))
    async with sessions() as session:
        rolled = await compute_report(session, spec)
        raw = await compute_report(session, spec, rollups=False)
    assert differences(raw, rolled) == []
    values = rolled.rows[0].values  # the outage was a network loss: its down time is external
    assert values["downtime_s"] + values["external_downtime_s"] == 2500 - 1500
