"""Threshold rules: evaluation as a plain function over stored telemetry, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import AuditEntry, Device, Rule, RuleAlert, RuleState, TelemetrySample
from server.errors import Conflict, NotFound
from server.maintenance import rules
from server.maintenance.rules import AlertFilter, EvaluationReport, evaluate_rules

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TEMP = "printer.fuser.temperature.celsius"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def add_device(sessions: Sessions, device_id: str, model: str | None = "LX-9") -> None:
    async with sessions() as session:
        session.add(Device(id=device_id, model=model))
        await session.commit()


async def add_samples(
    sessions: Sessions, device_id: str, points: Sequence[tuple[float, float]], metric: str = TEMP
) -> None:
    """``points``: (minutes after T0, value)."""
    async with sessions() as session:
        session.add_all(
            TelemetrySample(device_id=device_id, metric=metric, ts=at(minutes), value=value)
            for minutes, value in points
        )
        await session.commit()


async def add_rule(sessions: Sessions, **fields: Any) -> Rule:
    values: dict[str, Any] = {
        "name": "fuser hot",
        "metric": TEMP,
        "op": ">",
        "value": 80.0,
        "duration_s": 600.0,
        "severity": "warning",
        "model": None,
        "enabled": True,
    }
    values.update(fields)
    async with sessions() as session:
        return await rules.create_rule(session, actor="test", **values)


async def alerts(sessions: Sessions, **where: Any) -> list[RuleAlert]:
    async with sessions() as session:
        rows, _ = await rules.list_alerts(session, AlertFilter(**where), limit=1000)
    return sorted((alert for alert, _ in rows), key=lambda alert: alert.id)


async def test_rule_raises_only_once_the_condition_held_for_its_duration(sessions: Sessions) -> None:
    await add_device(sessions, "r-1")
    await add_rule(sessions)
    await add_samples(sessions, "r-1", [(0, 85), (5, 86), (9, 90)])
    report = await evaluate_rules(sessions)
    assert (report.samples, report.raised) == (3, 0)
    assert await alerts(sessions) == []

    await add_samples(sessions, "r-1", [(10, 88)])
    report = await evaluate_rules(sessions)
    assert (report.samples, report.raised) == (1, 1)
    [alert] = await alerts(sessions)
    assert (alert.device_id, alert.started_at, alert.raised_at, alert.ended_at, alert.value) == (
        "r-1",
        at(0),
        at(10),
        None,
        88.0,
    )


async def test_alert_ends_at_the_first_sample_where_the_condition_stops(sessions: Sessions) -> None:
    await add_device(sessions, "r-2")
    await add_rule(sessions)
    await add_samples(sessions, "r-2", [(0, 85), (10, 90), (12, 79), (13, 95), (20, 95)])
    report = await evaluate_rules(sessions)
    assert (report.raised, report.ended) == (1, 1)
    [alert] = await alerts(sessions)
    assert (alert.started_at, alert.raised_at, alert.ended_at) == (at(0), at(10), at(12))
    assert await alerts(sessions, active=True) == []

    # holding again: a new alert only once the full duration has passed again
    await add_samples(sessions, "r-2", [(23, 99)])
    await evaluate_rules(sessions)
    second = (await alerts(sessions, active=True))[0]
    assert (second.started_at, second.raised_at) == (at(13), at(23))


async def test_an_interruption_shorter_than_the_duration_restarts_the_clock(sessions: Sessions) -> None:
    await add_device(sessions, "r-3")
    await add_rule(sessions, op=">=", value=80.0)
    await add_samples(sessions, "r-3", [(0, 80), (6, 79.9), (7, 80), (16, 81)])
    await evaluate_rules(sessions)
    assert await alerts(sessions) == []
    await add_samples(sessions, "r-3", [(17, 80)])
    await evaluate_rules(sessions)
    [alert] = await alerts(sessions)
    assert (alert.started_at, alert.raised_at) == (at(7), at(17))


@pytest.mark.parametrize(
    ("op", "value", "holds", "fails"),
    [("<", 10.0, 9.9, 10.0), ("<=", 10.0, 10.0, 10.1), (">", 10.0, 10.1, 10.0), (">=", 10.0, 10.0, 9.9)],
)
async def test_each_comparison(sessions: Sessions, op: str, value: float, holds: float, fails: float) -> None:
    await add_device(sessions, "r-op")
    await add_rule(sessions, op=op, value=value, duration_s=0.0)
    await add_samples(sessions, "r-op", [(0, fails), (1, holds), (2, fails)])
    report = await evaluate_rules(sessions)
    assert (report.raised, report.ended) == (1, 1)
    [alert] = await alerts(sessions)
    assert (alert.raised_at, alert.ended_at, alert.value) == (at(1), at(2), holds)


async def test_model_filter_limits_the_rule_to_that_model(sessions: Sessions) -> None:
    await add_device(sessions, "lx", model="LX-9")
    await add_device(sessions, "mx", model="MX-1")
    await add_device(sessions, "none", model=None)
    await add_rule(sessions, model="LX-9", duration_s=0.0)
    await add_rule(sessions, name="any model", duration_s=0.0)
    for device in ("lx", "mx", "none"):
        await add_samples(sessions, device, [(0, 99)])
    await evaluate_rules(sessions)
    async with sessions() as session:
        rows, total = await rules.list_alerts(session, AlertFilter(), limit=100)
    assert total == 4
    assert sorted((rule.name, alert.device_id) for alert, rule in rows) == [
        ("any model", "lx"),
        ("any model", "mx"),
        ("any model", "none"),
        ("fuser hot", "lx"),
    ]


async def test_incremental_evaluation_reads_only_new_samples_and_never_re_raises(sessions: Sessions) -> None:
    await add_device(sessions, "r-4")
    await add_samples(sessions, "r-4", [(-30, 99), (-20, 99)], metric="other.metric")
    await add_rule(sessions)
    await add_samples(sessions, "r-4", [(0, 90), (10, 91)])
    await add_samples(sessions, "r-4", [(11, 1)], metric="other.metric")  # not a rule's metric
    first = await evaluate_rules(sessions)
    assert (first.samples, first.raised) == (2, 1)

    again = await evaluate_rules(sessions)
    assert again == EvaluationReport(rules=1)  # nothing new: nothing read

    await add_samples(sessions, "r-4", [(20, 92), (30, 93)])
    more = await evaluate_rules(sessions)
    assert (more.samples, more.raised, more.ended) == (2, 0, 0)
    assert len(await alerts(sessions)) == 1
    async with sessions() as session:
        state = await session.get(RuleState, (1, "r-4"))
        assert state is not None
        assert (state.last_ts, state.since) == (at(30), at(0))


async def test_small_batches_give_the_same_result(sessions: Sessions) -> None:
    await add_device(sessions, "b-1")
    await add_device(sessions, "b-2")
    await add_rule(sessions)
    await add_rule(sessions, name="cold", op="<", value=20.0, duration_s=0.0)
    points = [(minute, 90.0 if minute < 30 else 10.0) for minute in range(0, 40, 2)]
    for device in ("b-1", "b-2"):
        await add_samples(sessions, device, points)
    report = await evaluate_rules(sessions, batch_size=3)
    assert (report.samples, report.raised, report.ended) == (40, 4, 2)
    found = await alerts(sessions)
    assert sorted((a.device_id, a.rule_id, a.started_at, a.raised_at, a.ended_at) for a in found) == [
        ("b-1", 1, at(0), at(10), at(30)),
        ("b-1", 2, at(30), at(30), None),
        ("b-2", 1, at(0), at(10), at(30)),
        ("b-2", 2, at(30), at(30), None),
    ]


async def test_samples_older_than_the_last_evaluated_one_are_skipped_as_late(sessions: Sessions) -> None:
    await add_device(sessions, "late-1")
    await add_rule(sessions)
    await add_samples(sessions, "late-1", [(0, 90), (5, 90)])
    await evaluate_rules(sessions)
    await add_samples(sessions, "late-1", [(3, 10), (12, 90)])  # (3, 10) arrives late
    report = await evaluate_rules(sessions)
    assert (report.late, report.raised) == (1, 1)
    [alert] = await alerts(sessions)
    assert (alert.started_at, alert.raised_at) == (at(0), at(12))


async def test_a_new_rule_judges_only_telemetry_stored_after_it(sessions: Sessions) -> None:
    await add_device(sessions, "new-1")
    await add_samples(sessions, "new-1", [(0, 99), (60, 99)])
    await add_rule(sessions)
    assert (await evaluate_rules(sessions)).samples == 0
    await add_samples(sessions, "new-1", [(61, 99), (71, 99)])
    await evaluate_rules(sessions)
    [alert] = await alerts(sessions)
    assert (alert.started_at, alert.raised_at) == (at(61), at(71))


async def test_disabled_rules_are_not_evaluated_and_disabling_ends_open_alerts(sessions: Sessions) -> None:
    await add_device(sessions, "dis-1")
    rule = await add_rule(sessions, duration_s=0.0)
    await add_samples(sessions, "dis-1", [(0, 99)])
    await evaluate_rules(sessions)
    async with sessions() as session:
        await rules.update_rule(session, rule.id, {"enabled": False}, actor="test")
    [alert] = await alerts(sessions)
    assert alert.ended_at is not None
    await add_samples(sessions, "dis-1", [(1, 99)])
    assert await evaluate_rules(sessions) == EvaluationReport()

    async with sessions() as session:
        await rules.update_rule(session, rule.id, {"enabled": True}, actor="test")
    await add_samples(sessions, "dis-1", [(2, 99)])
    report = await evaluate_rules(sessions)
    assert (report.samples, report.raised) == (1, 1)  # the sample stored while disabled is not read
    assert len(await alerts(sessions, active=True)) == 1


async def test_changing_the_condition_restarts_the_rule(sessions: Sessions) -> None:
    await add_device(sessions, "chg-1")
    rule = await add_rule(sessions, duration_s=0.0)
    await add_samples(sessions, "chg-1", [(0, 99)])
    await evaluate_rules(sessions)
    async with sessions() as session:
        await rules.update_rule(session, rule.id, {"name": "renamed", "severity": "error"}, actor="test")
    assert len(await alerts(sessions, active=True)) == 1  # not a condition change
    async with sessions() as session:
        await rules.update_rule(session, rule.id, {"value": 100.0}, actor="test")
        states = await session.scalar(select(func.count()).select_from(RuleState))
    assert states == 0
    assert await alerts(sessions, active=True) == []
    await add_samples(sessions, "chg-1", [(1, 99), (2, 101)])
    await evaluate_rules(sessions)
    [active] = await alerts(sessions, active=True)
    assert (active.raised_at, active.value) == (at(2), 101.0)


async def test_a_pass_that_read_the_old_condition_cannot_move_the_cursor(sessions: Sessions) -> None:
    """The cursor moves by compare-and-set on the rule's condition: a pass racing an edit of the
    rule rolls back instead of committing states judged by the old condition."""
    await add_device(sessions, "cas-1")
    stale = await add_rule(sessions, duration_s=0.0)  # the rule as a running pass read it
    await add_samples(sessions, "cas-1", [(0, 99)])
    async with sessions() as session:
        await rules.update_rule(session, stale.id, {"value": 200.0}, actor="test")
    async with sessions() as session:
        assert not await rules._move_cursor(session, stale, stale.last_sample_id, 10**6)
        await session.rollback()
    report = await evaluate_rules(sessions)  # reads the rule afresh: 99 > 200 does not hold
    assert (report.samples, report.raised, report.conflict) == (0, 0, False)


async def test_concurrent_evaluators_raise_each_alert_once(sessions: Sessions) -> None:
    await add_device(sessions, "cc-1")
    await add_device(sessions, "cc-2")
    await add_rule(sessions, duration_s=0.0)
    await add_samples(sessions, "cc-1", [(minute, 99.0) for minute in range(20)])
    await add_samples(sessions, "cc-2", [(minute, 99.0) for minute in range(20)])
    reports = await asyncio.gather(*(evaluate_rules(sessions, batch_size=5) for _ in range(3)))
    await evaluate_rules(sessions)  # whatever a loser left over
    assert sum(report.raised for report in reports) <= 2
    assert sorted(alert.device_id for alert in await alerts(sessions)) == ["cc-1", "cc-2"]


async def test_evaluator_task_runs_passes_until_cancelled(sessions: Sessions) -> None:
    await add_device(sessions, "task-1")
    await add_rule(sessions, duration_s=0.0)
    await add_samples(sessions, "task-1", [(0, 99)])
    raised = asyncio.Event()

    def on_pass(report: EvaluationReport) -> None:
        if report.raised:
            raised.set()

    task = asyncio.create_task(rules.run_rule_evaluator(sessions, 0.01, on_pass=on_pass), name="test.rules")
    try:
        async with asyncio.timeout(10):
            await raised.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(await alerts(sessions, device_id="task-1")) == 1


async def test_crud_conflicts_not_found_audit_and_delete(sessions: Sessions) -> None:
    await add_device(sessions, "crud-1")
    rule = await add_rule(sessions, duration_s=0.0)
    with pytest.raises(Conflict) as caught:
        await add_rule(sessions)
    assert caught.value.field == "name"
    other = await add_rule(sessions, name="other")
    async with sessions() as session:
        with pytest.raises(Conflict):
            await rules.update_rule(session, other.id, {"name": "fuser hot"}, actor="test")
    async with sessions() as session:
        with pytest.raises(NotFound):
            await rules.get_rule(session, 999)
    await add_samples(sessions, "crud-1", [(0, 99)])
    await evaluate_rules(sessions)
    async with sessions() as session:
        await rules.delete_rule(session, rule.id, actor="user:alice")
    assert await alerts(sessions) == []
    async with sessions() as session:
        actions = list(await session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
        assert actions == ["rule.created", "rule.created", "rule.deleted"]
        listed, total = await rules.list_rules(session)
    assert (total, [row.name for row in listed]) == (1, ["other"])
