"""Incident rollups (server/kpi/incident_rollups.py): reports that read the whole months of P
from kpi_incident_months equal the raw reports and the reference engine, on SQLite and
PostgreSQL — before the rollup is built, after, and after late data, reopened incidents and
a device moved mid-month (the month straddling the move is read raw)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import (
    DeviceAssignmentPeriod,
    Incident,
    KpiIncidentDirty,
    KpiIncidentMonth,
    KpiIncidentYear,
)
from server.kpi import GroupBy, ReportSpec, compute_report, load_dataset, reference_report
from server.kpi.definitions import REPEAT_WINDOW_S
from server.kpi.generate import FleetShape, generate
from server.kpi.incident_rollups import (
    IncidentRow,
    build_months,
    month_start,
    next_month_start,
    refresh_incident_rollups,
)
from server.kpi.records import insert_dataset
from tests.server.incident_factory import Device as Dev
from tests.server.incident_factory import at, feed, feed_each, tracker
from tests.server.kpi.test_equivalence import differences, specs

SHAPE = FleetShape(
    devices=16,
    customers=4,
    days=95,
    seed=31,
    events_per_year=200,
    contract_share=0.3,
    skew_share=0.4,
    decommission_share=0.2,
    move_share=0.4,
    unassigned_share=0.1,
)


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def test_months_are_utc_calendar_months() -> None:
    assert month_start(utc(2026, 3, 31, 23).timestamp()) == utc(2026, 3, 1).timestamp()
    assert next_month_start(utc(2026, 12, 5).timestamp()) == utc(2027, 1, 1).timestamp()


def test_first_time_fix_is_judged_by_a_later_incident_of_the_same_code() -> None:
    day = 86400.0

    def incident(id_: int, code: str | None, start: float, channel: str | None = "field") -> IncidentRow:
        return IncidentRow(
            id_, code, start, start + 10, None, None, start + 100, start + 200, channel, True, 1
        )

    alone = build_months([incident(1, "E1", 0.0), incident(2, None, 10 * day)])
    assert alone[month_start(0.0)].counts["ftf"] == 2  # no later incident of its code (NULL: none)
    repeated = build_months([incident(1, "E1", 0.0), incident(2, "E1", 2 * day), incident(3, "E2", day)])
    assert repeated[month_start(0.0)].counts["ftf"] == 2  # 2 and 3; 1 came back within the window
    # the window's edges: a fault at the very fix time is a repeat, one at fix + window is not
    fixed = 100.0  # incident 1's t_restored
    at_fix = IncidentRow(2, "E1", fixed, fixed, None, None, None, None, None, False, 0)
    assert build_months([incident(1, "E1", 0.0), at_fix])[month_start(0.0)].counts.get("ftf", 0) == 0
    later = REPEAT_WINDOW_S + fixed
    past = IncidentRow(2, "E1", later, later, None, None, None, None, None, False, 0)
    assert build_months([incident(1, "E1", 0.0), past])[month_start(0.0)].counts["ftf"] == 1
    remote = build_months([incident(1, "E1", 0.0, "remote")])[month_start(0.0)]
    assert remote.counts.get("ftf", 0) == 0
    assert remote.counts["avoided"] == 1


async def _check(sessions: async_sessionmaker[AsyncSession], *, every: bool = True) -> None:
    """Every spec of the equivalence tests (``every``) and whole months by month and by
    customer: rollups on equals raw and the reference."""
    async with sessions() as session:
        stored = await load_dataset(session)
    as_of = utc(2026, 12, 1)
    extra = [
        *(
            ReportSpec(utc(2026, 1, 1), utc(2026, 4, 1), group_by=g, as_of=as_of)
            for g in (None, GroupBy.CUSTOMER, GroupBy.SITE, GroupBy.MONTH)
        ),
        ReportSpec(utc(2026, 1, 12, 7), utc(2026, 4, 1), customer=stored.customers[1].id, as_of=as_of),
        # mostly-inside partial months: the month read rolled up, its outside part subtracted
        ReportSpec(utc(2026, 2, 3), utc(2026, 3, 29), group_by=GroupBy.CUSTOMER, as_of=as_of),
        ReportSpec(utc(2026, 3, 3, 6), utc(2026, 3, 31), as_of=as_of),  # the dashboard's four weeks
    ]
    problems: list[str] = []
    used = 0
    for spec in [*(specs(stored) if every else []), *extra]:
        async with sessions() as session:
            with_rollups = await compute_report(session, spec)
            raw = await compute_report(session, spec, rollups=False)
        used += "resolved_rolled" in with_rollups.timings  # whole months were read rolled up
        problems += [f"{spec}: {p}" for p in differences(reference_report(stored, spec), with_rollups)[:3]]
        problems += [f"{spec} raw: {p}" for p in differences(raw, with_rollups)[:3]]
    assert problems == []
    assert used >= len(extra)


async def _refresh(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        n = await refresh_incident_rollups(session)
        await session.commit()
        assert await session.scalar(select(func.count()).select_from(KpiIncidentDirty)) == 0
    return n


async def test_incident_rollup_reports_equal_raw_and_reference(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await insert_dataset(session, generate(SHAPE))
        await session.commit()
    await _check(sessions, every=False)  # every device dirty: read raw
    assert await _refresh(sessions) > 0
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(KpiIncidentMonth)) > 0
    await _check(sessions)
    # late data and edits: one incident reopened, one resolved a month later, one deleted
    # (each marks its device dirty: read raw), and a clean device moved mid-February
    async with sessions() as session:
        resolved = list(
            await session.scalars(
                select(Incident)
                .where(Incident.resolved_s < utc(2026, 3, 1).timestamp())
                .order_by(Incident.device_id, Incident.id)
            )
        )
        first, second, third = resolved[0], resolved[len(resolved) // 2], resolved[-1]
        await session.execute(
            update(Incident)
            .where(Incident.id == first.id)
            .values(status="open", t_resolved=None, resolved_s=None, channel=None)
        )
        later = utc(2026, 3, 15)
        await session.execute(
            update(Incident)
            .where(Incident.id == second.id)
            .values(t_resolved=later, resolved_s=later.timestamp())
        )
        await session.execute(delete(Incident).where(Incident.id == third.id))
        dirty = set(await session.scalars(select(KpiIncidentDirty.device_id)))
        assert dirty == {first.device_id, second.device_id, third.device_id}
        moved = await session.scalar(
            select(Incident.device_id)
            .where(
                Incident.resolved_s >= utc(2026, 2, 1).timestamp(),
                Incident.resolved_s < utc(2026, 3, 1).timestamp(),
                Incident.device_id.not_in(dirty),
            )
            .group_by(Incident.device_id)
            .having(func.count() > 3)
            .order_by(Incident.device_id)
            .limit(1)
        )
        assert moved is not None
        await session.execute(delete(DeviceAssignmentPeriod).where(DeviceAssignmentPeriod.device_id == moved))
        customers = [c.id for c in (await load_dataset(session)).customers]
        for customer, since in ((customers[0], utc(1970, 1, 1)), (customers[1], utc(2026, 2, 14))):
            await session.execute(
                insert(DeviceAssignmentPeriod).values(
                    device_id=moved,
                    customer_id=customer,
                    site_id=None,
                    valid_from=since,
                    valid_from_s=since.timestamp(),
                )
            )
        await session.commit()
    await _check(sessions, every=False)
    assert await _refresh(sessions) == 3
    await _check(sessions, every=False)


async def test_the_incidents_writer_keeps_the_incident_rollup_current(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Faults raised and cleared through the real writer, one uploaded late: after each batch
    no device is left dirty, and the November report read from the rollup (the whole month)
    equals the raw report."""
    inc = tracker()
    dev = Dev("late-i")
    await feed_each(sessions, inc, dev.status(0), dev.raised(100), dev.state(100, "down"))
    await feed_each(sessions, inc, dev.cleared(700), dev.state(700, "running"))
    await inc.sweep(sessions, now=at(2000))
    await feed(
        sessions,
        inc,
        dev.raised(3000, received=9000),
        dev.state(3000, "down", received=9000.01),
        dev.cleared(3400, received=9000.02),
        dev.state(3400, "running", received=9000.03),
        dev.status(8999, received=9000.1),
    )
    await inc.sweep(sessions, now=at(20000))
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(KpiIncidentDirty)) == 0
        resolved = await session.scalar(
            select(func.count()).select_from(Incident).where(Incident.resolved_s.is_not(None))
        )
        rolled_up = await session.scalar(select(func.sum(KpiIncidentMonth.n)))
    assert resolved
    assert rolled_up == resolved
    spec = ReportSpec(utc(2026, 11, 1), utc(2026, 12, 1), as_of=utc(2026, 12, 1))
    async with sessions() as session:
        rolled = await compute_report(session, spec)
        raw = await compute_report(session, spec, rollups=False)
    assert "resolved_rolled" in rolled.timings
    assert differences(raw, rolled) == []
    assert rolled.rows[0].values["resolved"] == resolved


async def test_whole_calendar_years_read_year_rows(sessions: async_sessionmaker[AsyncSession]) -> None:
    """A report over whole UTC years reads one row per device and year (single-period devices)
    and months for the rest; it equals the raw report and the reference — as do a year not
    aligned to the calendar, months of it, and a report after late data in the year."""
    shape = FleetShape(devices=8, customers=3, days=400, seed=5, events_per_year=60, move_share=0.3)
    async with sessions() as session:
        await insert_dataset(session, generate(shape))
        await session.commit()
    await _refresh(sessions)
    as_of = utc(2027, 2, 5)
    specs_ = [
        ReportSpec(utc(2026, 1, 1), utc(2027, 1, 1), as_of=as_of),
        ReportSpec(utc(2026, 1, 1), utc(2027, 1, 1), group_by=GroupBy.CUSTOMER, as_of=as_of),
        ReportSpec(utc(2025, 12, 1), utc(2027, 2, 1), group_by=GroupBy.SITE, as_of=as_of),
        ReportSpec(utc(2026, 1, 1), utc(2027, 1, 1), group_by=GroupBy.MONTH, as_of=as_of),
        ReportSpec(utc(2026, 2, 1), utc(2027, 2, 1), as_of=as_of),
    ]

    async def check() -> list[bool]:
        async with sessions() as session:
            stored = await load_dataset(session)
        used = []
        for spec in specs_:
            async with sessions() as session:
                rolled = await compute_report(session, spec)
                raw = await compute_report(session, spec, rollups=False)
            assert differences(reference_report(stored, spec), rolled) == [], spec
            assert differences(raw, rolled) == [], spec
            used.append("rolled_years" in rolled.timings)
        return used

    assert await check() == [True, True, True, False, False]
    async with sessions() as session:  # late data in mid-year: the device is read raw, then rebuilt
        late = await session.scalar(
            select(Incident).where(Incident.resolved_s >= utc(2026, 6, 1).timestamp()).limit(1)
        )
        assert late is not None
        await session.execute(
            update(Incident).where(Incident.id == late.id).values(channel="field", visits=2)
        )
        await session.commit()
    await check()
    assert await _refresh(sessions) == 1
    async with sessions() as session:
        years = await session.scalar(select(func.count()).select_from(KpiIncidentYear))
    assert years is not None
    assert years > 0
    await check()
