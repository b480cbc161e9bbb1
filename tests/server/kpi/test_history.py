"""Customer at the time: a device moved mid-period counts its downtime and incidents to the old
customer before the move and to the new one after, in both engines (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.kpi import GroupBy, Report, ReportSpec, compute_report, reference_report
from server.kpi.records import (
    AssignmentRecord,
    CustomerRecord,
    Dataset,
    DeviceRecord,
    IncidentRecord,
    SiteRecord,
    StateRecord,
    insert_dataset,
)
from tests.server.kpi.golden import AS_OF, END, HOUR, START, h

MOVE = h(100)  # mv-1 leaves Old (site 1) for New (site 2)


def dataset() -> Dataset:
    def incident(
        key: int, code: str, fault: float, restored: float, channel: str, **kw: object
    ) -> IncidentRecord:
        return IncidentRecord(
            id=key, device_id="mv-1", fault_code=code, fault_s=fault, detect_s=fault + 60, restored_s=restored,
            resolved_s=restored + HOUR / 2, channel=channel, **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    return Dataset(
        customers=[CustomerRecord(1, "Old", None, 100.0), CustomerRecord(2, "New", None, 300.0)],
        sites=[SiteRecord(1, 1, "Old site"), SiteRecord(2, 2, "New site")],
        devices=[DeviceRecord("mv-1", 2, 2, "CT-7"), DeviceRecord("st-1", 1, 1, "CT-7")],
        assignments=[AssignmentRecord("mv-1", 1, 1, 0.0), AssignmentRecord("mv-1", 2, 2, MOVE)],
        states=[
            StateRecord("mv-1", "running", h(-10), h(20)),
            StateRecord("mv-1", "down", h(20), h(26)),  # 6 h, Old
            StateRecord("mv-1", "running", h(26), h(95)),
            StateRecord("mv-1", "down", h(95), h(103)),  # across the move: 5 h Old, 3 h New
            StateRecord("mv-1", "running", h(103), h(140)),
            StateRecord("mv-1", "down", h(140), h(141)),  # 1 h, New
            StateRecord("mv-1", "running", h(141), None),
            StateRecord("st-1", "running", h(-10), None),  # never moved: Old throughout
        ],
        incidents=[
            incident(1, "E1", h(20), h(26), "remote", needs_dispatch=True),  # Old, avoided: 100
            incident(2, "E1", h(95), h(103), "field", visits=1),  # began before the move: Old
            incident(3, "E2", h(140), h(141), "customer", needs_dispatch=True),  # New, avoided: 300
        ],
    )


EXPECTED = {
    1: {  # Old: mv-1 until the move, st-1 all week
        "devices": 2,
        "required_s": (100 + 168) * HOUR,
        "downtime_s": (6 + 5) * HOUR,
        "failures": 2,
        "failure_episodes": 2,
        "resolved": 2,
        "dispatches_avoided": 1,
        "dispatches_avoided_value": 100.0,
    },
    2: {  # New: mv-1 from the move on
        "devices": 1,
        "required_s": (168 - 100) * HOUR,
        "downtime_s": (3 + 1) * HOUR,
        "failures": 1,
        "failure_episodes": 1,
        "resolved": 1,
        "dispatches_avoided": 1,
        "dispatches_avoided_value": 300.0,
    },
}


def check(report: Report, by: GroupBy | None) -> None:
    rows = {row.key: row.values for row in report.rows}
    if by is None:  # the fleet counts the moved device once, and all of its time
        [fleet] = rows.values()
        assert fleet["devices"] == 2
        assert fleet["required_s"] == pytest.approx(2 * 168 * HOUR)
        assert fleet["downtime_s"] == pytest.approx(15 * HOUR)
        return
    assert set(rows) == {1, 2}, report.engine
    for key, expected in EXPECTED.items():
        for name, want in expected.items():
            assert rows[key][name] == pytest.approx(want), f"{report.engine} {by} {key} {name}"


async def test_a_moved_device_counts_to_the_customer_at_the_time(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ds = dataset()
    async with sessions() as session:
        await insert_dataset(session, ds)
    for by in (None, GroupBy.CUSTOMER, GroupBy.SITE):
        spec = ReportSpec(START, END, group_by=by, as_of=AS_OF)
        check(reference_report(ds, spec), by)
        async with sessions() as session:
            check(await compute_report(session, spec), by)
    # a filter is the customer at the time, too
    new_only = ReportSpec(START, END, customer=2, as_of=AS_OF)
    async with sessions() as session:
        for report in (reference_report(ds, new_only), await compute_report(session, new_only)):
            [row] = report.rows
            assert row.values["downtime_s"] == pytest.approx(4 * HOUR)
            assert row.values["resolved"] == 1
