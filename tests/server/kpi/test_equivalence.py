"""The SQL engine gives the reference engine's numbers, on random fleets, on SQLite and PostgreSQL.

The fleets come from ``server.kpi.generate`` with a seed, shaped to be awkward: overlapping faults
and intervals, skewed clocks, contract hours, decommissioned and late devices, open incidents.
The reference runs on the rows read back from the database, so both see the same data.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.kpi import GroupBy, Report, ReportSpec, compute_report, load_dataset, reference_report
from server.kpi.generate import FleetShape, generate
from server.kpi.records import Dataset, insert_dataset

SHAPES = {
    "plain": FleetShape(devices=24, customers=3, days=75, seed=11),
    "awkward": FleetShape(
        devices=20,
        customers=4,
        days=60,
        seed=12,
        events_per_year=150,
        contract_share=0.6,
        overlap_share=0.4,
        skew_share=0.4,
        decommission_share=0.2,
        late_start_share=0.2,
        unassigned_share=0.1,
        overlapping_states=True,  # the SQL engine's general path (union per device)
    ),
    "writer": FleetShape(  # awkward, with intervals as the incidents writer stores them: the sum path
        devices=20,
        customers=4,
        days=60,
        seed=13,
        events_per_year=150,
        contract_share=0.6,
        overlap_share=0.4,
        skew_share=0.4,
        decommission_share=0.2,
        late_start_share=0.2,
        unassigned_share=0.1,
    ),
    "moves": FleetShape(  # devices moved between customers/sites: grouped by the customer at the time
        devices=20,
        customers=4,
        days=60,
        seed=14,
        events_per_year=150,
        contract_share=0.5,
        decommission_share=0.2,
        move_share=0.5,
    ),
}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def specs(ds: Dataset) -> list[ReportSpec]:
    customer = ds.customers[0].id
    site = ds.sites[-1].id
    model = ds.devices[0].model
    code = next(i.fault_code for i in ds.incidents if i.fault_code)
    periods = [
        (utc(2026, 1, 1), utc(2026, 2, 1), None),
        (
            utc(2026, 1, 12, 7, 30),
            utc(2026, 4, 1),
            utc(2026, 3, 3, 10, 15),
        ),  # cut: open things measured to now
        (utc(2026, 2, 27, 18), utc(2026, 3, 2, 6), None),  # short, across a month end
    ]
    out = []
    for start, end, cut in periods:
        as_of = cut or utc(2026, 12, 1)
        for group_by in (None, *GroupBy):
            out.append(ReportSpec(start, end, group_by=group_by, as_of=as_of))
        out += [
            ReportSpec(start, end, customer=customer, group_by=GroupBy.SITE, as_of=as_of),
            ReportSpec(start, end, site=site, as_of=as_of),
            ReportSpec(start, end, model=model, group_by=GroupBy.WEEK, as_of=as_of),
            ReportSpec(start, end, fault_code=code, group_by=GroupBy.CUSTOMER, as_of=as_of),
        ]
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return False
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return bool(a == b) and type(a) is type(b)


def differences(reference: Report, sql: Report) -> list[str]:
    ref_rows = [(r.key, r.label, r.start, r.end) for r in reference.rows]
    sql_rows = [(r.key, r.label, r.start, r.end) for r in sql.rows]
    if ref_rows != sql_rows:
        return [f"rows differ: {ref_rows} != {sql_rows}"]
    return [
        f"{a.label} {name}: reference {a.values[name]!r} != sql {b.values[name]!r}"
        for a, b in zip(reference.rows, sql.rows, strict=True)
        for name in a.values
        if not same(a.values[name], b.values[name])
    ]


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
async def test_sql_engine_equals_reference_on_random_fleets(
    sessions: async_sessionmaker[AsyncSession], shape: str
) -> None:
    async with sessions() as session:
        await insert_dataset(session, generate(SHAPES[shape]))
    async with sessions() as session:
        stored = await load_dataset(session)
    assert len(stored.incidents) > 100
    assert any(i.fault_s > i.detect_s for i in stored.incidents), "some clocks are fast"
    problems: list[str] = []
    for spec in specs(stored):
        reference = reference_report(stored, spec)
        async with sessions() as session:
            sql = await compute_report(session, spec)
        problems += [f"{spec}: {p}" for p in differences(reference, sql)[:5]]
        assert reference.rows, spec
    assert problems == []


async def test_sql_engine_on_an_empty_database(sessions: async_sessionmaker[AsyncSession]) -> None:
    spec = ReportSpec(utc(2026, 1, 1), utc(2026, 2, 1), as_of=utc(2026, 6, 1))
    async with sessions() as session:
        sql = await compute_report(session, spec)
    assert differences(reference_report(Dataset(), spec), sql) == []
    values = sql.rows[0].values
    assert values["devices"] == 0
    assert values["availability"] is None
    assert values["mtbf_s"] is None
    assert values["mtbf_censored"] is True
    assert values["resolved"] == 0
    assert values["self_resolution_rate"] is None


def _disjoint_per_device(ds: Dataset) -> bool:
    by_device: dict[str, list[tuple[float, float]]] = {}
    for s in ds.states:
        by_device.setdefault(s.device_id, []).append((s.start_s, math.inf if s.end_s is None else s.end_s))
    for spans in by_device.values():
        spans.sort()
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)):
            return False
    return True


def test_generated_intervals_keep_the_writers_invariant() -> None:
    """Per device non-overlapping (docs/incidents.md) unless asked otherwise; the awkward shape
    does overlap, so the SQL engine's general path stays covered."""
    assert _disjoint_per_device(generate(SHAPES["writer"]))
    assert _disjoint_per_device(generate(SHAPES["plain"]))
    assert not _disjoint_per_device(generate(SHAPES["awkward"]))
