"""Preventive-maintenance rules: ``metric op value`` held for ``duration_s`` (device time) raises
a :class:`~server.db.models.RuleAlert`; the first sample where it no longer holds ends it.

Evaluation is incremental. Each rule keeps a cursor, ``rules.last_sample_id``: telemetry rows up
to that id have been evaluated. A pass (:func:`evaluate_rules`) reads only the newer rows of the
rules' metrics (a primary-key range scan), in batches, and keeps per rule and device a
:class:`~server.db.models.RuleState`: the device time of the newest sample seen, since when the
condition holds, and the open alert. A batch, the states it changes, its alerts and the moved
cursors commit together. The cursor moves by compare-and-set (``WHERE last_sample_id = old``
and the rule's condition unchanged), so two evaluators, or an evaluator racing an edit of the
rule, never apply the same rows twice: the loser rolls back and the next pass starts over.

A new rule — and one re-enabled or whose condition changed — starts at the newest stored
sample: it judges telemetry stored from then on, it does not look back. Samples older (device
time) than the newest one already evaluated for that rule and device arrive late and are
skipped. Functions here commit; the periodic job is :func:`rule_job`.

Scope (``scope``: the caller's device condition, ``server.base.access.device_condition``;
None: the whole fleet). A rule has no customer: it judges every device of its model (or every
device). A scoped caller (a technician) sees the rules that judge a device in their scope — those
for every model and those for a model one of their devices has — and the alerts of their
devices only; they may create, change or delete a rule only when every device it judges, before
and after the change, is in their scope, so nobody changes another customer's alerting.
"""

from __future__ import annotations

import logging
import operator
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import delete, func, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from server.base import audit
from server.db.models import Device, Rule, RuleAlert, RuleState, TelemetrySample
from server.db.types import utcnow
from server.errors import Conflict, Forbidden, NotFound
from server.periodic import Periodic

__all__ = [
    "CONDITION_FIELDS",
    "OPS",
    "AlertFilter",
    "EvaluationReport",
    "create_rule",
    "delete_rule",
    "evaluate_rules",
    "get_rule",
    "list_alerts",
    "list_rules",
    "rule_condition",
    "rule_job",
    "run_rule_evaluator",
    "update_rule",
]

logger = logging.getLogger(__name__)

OPS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
CONDITION_FIELDS: Final = frozenset({"metric", "op", "value", "duration_s", "model"})
"""Changing one of these restarts the rule: open alerts end, states are dropped, cursor reset."""

_EDITABLE: Final = CONDITION_FIELDS | {"name", "severity", "enabled"}


# --- CRUD --------------------------------------------------------------------------------------


async def _newest_sample_id(session: AsyncSession) -> int:
    return await session.scalar(select(func.max(TelemetrySample.id))) or 0


async def _name_taken(session: AsyncSession, name: str, rule_id: int | None = None) -> None:
    existing = await session.scalar(select(Rule.id).where(Rule.name == name))
    if existing is not None and existing != rule_id:
        raise Conflict(f"a rule named {name!r} already exists", field="name")


def _judges(model: str | None) -> ColumnElement[bool]:
    """The devices a rule for ``model`` (None: every model) judges."""
    return true() if model is None else Device.model == model


def _outside(scope: ColumnElement[bool]) -> ColumnElement[bool]:
    """Devices not in ``scope`` (NULL-safe, unlike ``NOT scope`` on a NULL customer)."""
    return Device.id.not_in(select(Device.id).where(scope))


def rule_condition(scope: ColumnElement[bool] | None) -> ColumnElement[bool] | None:
    """A WHERE condition on :class:`Rule`: the rules a caller with ``scope`` sees (None: no
    restriction) — all but those that judge only devices outside it: a rule for every model, for
    a model one of their devices has, or for a model no other customer's device has (yet)."""
    if scope is None:
        return None
    known = Device.model.is_not(None)  # no NULL in a NOT IN list
    inside = select(Device.model).where(scope, known).distinct()
    outside = select(Device.model).where(_outside(scope), known).distinct()
    return or_(Rule.model.is_(None), Rule.model.in_(inside), Rule.model.not_in(outside))


async def _check_reach(
    session: AsyncSession, scope: ColumnElement[bool] | None, model: str | None, rule: str
) -> None:
    """Refuse a change to a rule that judges (or would judge) a device outside ``scope``."""
    if scope is None:
        return
    outside = await session.scalar(
        select(func.count()).select_from(Device).where(_judges(model), _outside(scope))
    )
    if outside:
        which = "every model" if model is None else f"model {model!r}"
        raise Forbidden(
            f"{rule} (for {which}) judges {outside} device(s) of customers you are not assigned "
            "to; an admin can change it"
        )


async def create_rule(
    session: AsyncSession, *, actor: str, scope: ColumnElement[bool] | None = None, **fields: Any
) -> Rule:
    """A new rule from validated ``fields`` (name, metric, op, value, duration_s, severity,
    model, enabled); it judges telemetry stored from now on."""
    unknown = set(fields) - _EDITABLE
    if unknown:
        raise TypeError(f"unknown rule fields: {sorted(unknown)}")
    await _check_reach(session, scope, fields.get("model"), "a rule")
    await _name_taken(session, fields["name"])
    rule = Rule(**fields, created_at=utcnow(), last_sample_id=await _newest_sample_id(session))
    session.add(rule)
    try:
        await session.flush()
    except IntegrityError as exc:  # the same name, created concurrently
        await session.rollback()
        raise Conflict(f"a rule named {fields['name']!r} already exists", field="name") from exc
    audit.record(
        session, actor=actor, action="rule.created", target=f"rule:{rule.id}", detail=_describe(rule)
    )
    await session.commit()
    return rule


async def get_rule(session: AsyncSession, rule_id: int, *, scope: ColumnElement[bool] | None = None) -> Rule:
    """The rule; :class:`Forbidden` if it judges no device in ``scope``."""
    rule = await session.get(Rule, rule_id)
    if rule is None:
        raise NotFound("rule", rule_id)
    visible = rule_condition(scope)
    if (
        visible is not None
        and await session.scalar(select(Rule.id).where(Rule.id == rule_id, visible)) is None
    ):
        raise Forbidden(
            f"rule {rule_id} judges only devices of customers you are not assigned to; "
            "an admin can assign you with 'fleetcare server assign'"
        )
    return rule


async def list_rules(
    session: AsyncSession,
    *,
    enabled: bool | None = None,
    metric: str | None = None,
    model: str | None = None,
    limit: int = 100,
    offset: int = 0,
    scope: ColumnElement[bool] | None = None,
) -> tuple[list[Rule], int]:
    visible = rule_condition(scope)
    conditions: list[ColumnElement[bool]] = [] if visible is None else [visible]
    if enabled is not None:
        conditions.append(Rule.enabled.is_(enabled))
    if metric is not None:
        conditions.append(Rule.metric == metric)
    if model is not None:
        conditions.append(Rule.model == model)
    total = await session.scalar(select(func.count()).select_from(Rule).where(*conditions))
    rows = await session.scalars(
        select(Rule).where(*conditions).order_by(Rule.id).limit(limit).offset(offset)
    )
    return list(rows), total or 0


async def update_rule(
    session: AsyncSession,
    rule_id: int,
    changes: Mapping[str, Any],
    *,
    actor: str,
    scope: ColumnElement[bool] | None = None,
) -> Rule:
    """Apply validated ``changes``. A changed condition, or disabling, ends the rule's open
    alerts (at server time) and forgets its states; re-enabling or a changed condition restarts
    it at the newest stored sample."""
    unknown = set(changes) - _EDITABLE
    if unknown:
        raise TypeError(f"unknown rule fields: {sorted(unknown)}")
    rule = await get_rule(session, rule_id, scope=scope)
    await _check_reach(session, scope, rule.model, f"rule {rule_id}")
    if "model" in changes:
        await _check_reach(session, scope, changes["model"], f"rule {rule_id}")
    if "name" in changes:
        await _name_taken(session, changes["name"], rule_id)
    changed = {key: value for key, value in changes.items() if getattr(rule, key) != value}
    if not changed:
        return rule
    restart = bool(CONDITION_FIELDS & changed.keys())
    if restart or changed.get("enabled") is False:
        await _stop(session, rule)
    if restart or changed.get("enabled") is True:
        rule.last_sample_id = await _newest_sample_id(session)
    for key, value in changed.items():
        setattr(rule, key, value)
    audit.record(
        session,
        actor=actor,
        action="rule.updated",
        target=f"rule:{rule.id}",
        detail={"changed": sorted(changed), **_describe(rule)},
    )
    name = rule.name
    try:
        await session.commit()
    except IntegrityError as exc:  # the same name, taken concurrently
        await session.rollback()
        raise Conflict(f"a rule named {name!r} already exists", field="name") from exc
    return rule


async def delete_rule(
    session: AsyncSession, rule_id: int, *, actor: str, scope: ColumnElement[bool] | None = None
) -> None:
    """Delete the rule with its alerts and states (disable it instead to keep the history)."""
    rule = await get_rule(session, rule_id, scope=scope)
    await _check_reach(session, scope, rule.model, f"rule {rule_id}")
    detail = _describe(rule)
    await session.execute(delete(RuleState).where(RuleState.rule_id == rule_id))
    await session.execute(delete(RuleAlert).where(RuleAlert.rule_id == rule_id))
    await session.delete(rule)
    audit.record(session, actor=actor, action="rule.deleted", target=f"rule:{rule_id}", detail=detail)
    await session.commit()


async def _stop(session: AsyncSession, rule: Rule) -> None:
    now = utcnow()
    alerts = await session.scalars(
        select(RuleAlert).where(RuleAlert.rule_id == rule.id, RuleAlert.ended_at.is_(None))
    )
    for alert in alerts:
        alert.ended_at = max(now, alert.raised_at)  # device clocks may run ahead
    await session.execute(delete(RuleState).where(RuleState.rule_id == rule.id))


def _describe(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "condition": f"{rule.metric} {rule.op} {rule.value:g} for {rule.duration_s:g}s",
        "model": rule.model,
        "severity": rule.severity,
        "enabled": rule.enabled,
    }


# --- alerts ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertFilter:
    device_id: str | None = None
    rule_id: int | None = None
    active: bool | None = None  # True: not ended yet
    since: datetime | None = None  # raised_at in [since, until)
    until: datetime | None = None


async def list_alerts(
    session: AsyncSession,
    where: AlertFilter,
    *,
    limit: int = 100,
    offset: int = 0,
    scope: ColumnElement[bool] | None = None,
) -> tuple[list[tuple[RuleAlert, Rule]], int]:
    """Alerts (of devices in ``scope``) with their rule, newest raised first, and the total count."""
    conditions: list[ColumnElement[bool]] = []
    if scope is not None:  # a filter cannot widen it: the device's own row decides
        conditions.append(RuleAlert.device_id.in_(select(Device.id).where(scope)))
    if where.device_id is not None:
        conditions.append(RuleAlert.device_id == where.device_id)
    if where.rule_id is not None:
        conditions.append(RuleAlert.rule_id == where.rule_id)
    if where.active is not None:
        conditions.append(RuleAlert.ended_at.is_(None) if where.active else RuleAlert.ended_at.is_not(None))
    if where.since is not None:
        conditions.append(RuleAlert.raised_at >= where.since)
    if where.until is not None:
        conditions.append(RuleAlert.raised_at < where.until)
    total = await session.scalar(select(func.count()).select_from(RuleAlert).where(*conditions))
    rows = await session.execute(
        select(RuleAlert, Rule)
        .join(Rule, Rule.id == RuleAlert.rule_id)
        .where(*conditions)
        .order_by(RuleAlert.raised_at.desc(), RuleAlert.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [(alert, rule) for alert, rule in rows], total or 0


# --- evaluation --------------------------------------------------------------------------------


@dataclass(slots=True)
class EvaluationReport:
    """What one pass did."""

    rules: int = 0  # enabled rules considered
    samples: int = 0  # telemetry rows read
    raised: int = 0
    ended: int = 0
    late: int = 0  # samples older (device time) than one already evaluated: skipped
    conflict: bool = False  # another evaluator or a rule edit won a race; retried next pass


@dataclass(frozen=True, slots=True)
class _Sample:
    id: int
    device_id: str
    metric: str
    ts: datetime
    value: float
    model: str | None  # the device's


def _unchanged(rule: Rule, cursor: int | None) -> list[ColumnElement[bool]]:
    """The compare-and-set guard: the cursor and the condition are still what was read."""
    return [
        Rule.id == rule.id,
        Rule.enabled.is_(True),
        Rule.last_sample_id.is_not_distinct_from(cursor),
        Rule.metric == rule.metric,
        Rule.op == rule.op,
        Rule.value == rule.value,
        Rule.duration_s == rule.duration_s,
        Rule.model.is_not_distinct_from(rule.model),
    ]


async def _move_cursor(session: AsyncSession, rule: Rule, old: int | None, new: int) -> bool:
    result = await session.execute(
        update(Rule)
        .where(*_unchanged(rule, old))
        .values(last_sample_id=new)
        .returning(Rule.id)
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


async def evaluate_rules(
    sessions: async_sessionmaker[AsyncSession], *, batch_size: int = 10000
) -> EvaluationReport:
    """One evaluation pass over the telemetry stored since the previous one, for every enabled
    rule. Plain function: the periodic task calls it, tests call it directly."""
    report = EvaluationReport()
    async with sessions() as session:
        rules = list(await session.scalars(select(Rule).where(Rule.enabled.is_(True)).order_by(Rule.id)))
        report.rules = len(rules)
        if not rules:
            return report
        top = await _newest_sample_id(session)
        cursors: dict[int, int | None] = {rule.id: rule.last_sample_id for rule in rules}
        # a rule without a cursor (not created through this service) starts at the newest sample
        for rule in rules:
            if cursors[rule.id] is None:
                if not await _move_cursor(session, rule, None, top):
                    await session.rollback()
                    report.conflict = True
                    return report
                cursors[rule.id] = top
        await session.commit()
        metrics = sorted({rule.metric for rule in rules})
        while (low := min(c or 0 for c in cursors.values())) < top:
            result = await session.execute(
                select(
                    TelemetrySample.id,
                    TelemetrySample.device_id,
                    TelemetrySample.metric,
                    TelemetrySample.ts,
                    TelemetrySample.value,
                    Device.model,
                )
                .join(Device, Device.id == TelemetrySample.device_id)
                .where(
                    TelemetrySample.id > low,
                    TelemetrySample.id <= top,
                    TelemetrySample.metric.in_(metrics),
                )
                .order_by(TelemetrySample.id)
                .limit(batch_size)
            )
            rows = [_Sample(*row) for row in result]
            upto = rows[-1].id if len(rows) == batch_size else top
            report.samples += len(rows)
            if not await _apply_batch(
                session, rules=rules, cursors=cursors, rows=rows, upto=upto, report=report
            ):
                await session.rollback()
                report.conflict = True
                return report
            await session.commit()
            for rule in rules:
                cursors[rule.id] = max(cursors[rule.id] or 0, upto)
    return report


async def _apply_batch(
    session: AsyncSession,
    *,
    rules: list[Rule],
    cursors: dict[int, int | None],
    rows: Sequence[_Sample],
    upto: int,
    report: EvaluationReport,
) -> bool:
    """Move the cursors (first: on PostgreSQL this locks the rules against a second evaluator),
    then apply the rows to the states. False when a cursor moved under us."""
    moving = [rule for rule in rules if (cursors[rule.id] or 0) < upto]
    for rule in moving:
        if not await _move_cursor(session, rule, cursors[rule.id], upto):
            return False
    work: dict[int, dict[str, list[_Sample]]] = {}
    for rule in moving:
        after = cursors[rule.id] or 0
        per_device: dict[str, list[_Sample]] = defaultdict(list)
        for row in rows:
            if (
                row.metric == rule.metric
                and row.id > after
                and (rule.model is None or row.model == rule.model)
            ):
                per_device[row.device_id].append(row)
        if per_device:
            work[rule.id] = per_device
    if not work:
        return True
    devices = {device for per_device in work.values() for device in per_device}
    states = {
        (state.rule_id, state.device_id): state
        for state in await session.scalars(
            select(RuleState).where(RuleState.rule_id.in_(work), RuleState.device_id.in_(devices))
        )
    }
    for rule in moving:
        for device_id, unsorted in work.get(rule.id, {}).items():
            samples = sorted(unsorted, key=lambda sample: (sample.ts, sample.id))
            state = states.get((rule.id, device_id))
            if state is None:
                state = RuleState(rule_id=rule.id, device_id=device_id, last_ts=samples[0].ts)
                session.add(state)
            elif samples[0].ts <= state.last_ts:
                fresh = [sample for sample in samples if sample.ts > state.last_ts]
                report.late += len(samples) - len(fresh)
                samples = fresh
            for sample in samples:
                await _step(session, rule, state, sample, report)
    return True


async def _step(
    session: AsyncSession, rule: Rule, state: RuleState, sample: _Sample, report: EvaluationReport
) -> None:
    """One sample through the rule's state: pending → raised → ended."""
    state.last_ts = sample.ts
    if OPS[rule.op](sample.value, rule.value):
        if state.since is None:
            state.since = sample.ts
        if state.alert_id is None and (sample.ts - state.since).total_seconds() >= rule.duration_s:
            alert = RuleAlert(
                rule_id=rule.id,
                device_id=sample.device_id,
                started_at=state.since,
                raised_at=sample.ts,
                value=sample.value,
            )
            session.add(alert)
            await session.flush()  # the alert's id, for the state
            state.alert_id = alert.id
            report.raised += 1
            logger.info(
                "rule %r raised on %s: %s %s %g since %s",
                rule.name,
                sample.device_id,
                rule.metric,
                rule.op,
                rule.value,
                state.since.isoformat(),
            )
        return
    if state.alert_id is not None:
        await session.execute(
            update(RuleAlert)
            .where(RuleAlert.id == state.alert_id, RuleAlert.ended_at.is_(None))
            .values(ended_at=sample.ts)
            .execution_options(synchronize_session=False)
        )
        state.alert_id = None
        report.ended += 1
    state.since = None


def rule_job(
    sessions: async_sessionmaker[AsyncSession],
    interval: float,
    *,
    batch_size: int = 10000,
    on_pass: Callable[[EvaluationReport], None] | None = None,
) -> Periodic:
    """A pass every ``interval`` seconds. A failed pass (the database is down) is logged and
    retried at the next tick; its batch was rolled back."""

    async def rule_round(_now: datetime | None) -> EvaluationReport:
        report = await evaluate_rules(sessions, batch_size=batch_size)
        if report.raised or report.ended or report.late:
            logger.info(
                "rules: %d samples, %d raised, %d ended, %d late",
                report.samples,
                report.raised,
                report.ended,
                report.late,
            )
        if on_pass is not None:
            on_pass(report)
        return report

    return Periodic("server.rules.evaluator", interval, rule_round)


async def run_rule_evaluator(
    sessions: async_sessionmaker[AsyncSession],
    interval: float,
    *,
    batch_size: int = 10000,
    on_pass: Callable[[EvaluationReport], None] | None = None,
) -> None:
    """:func:`rule_job`, run until cancelled."""
    await rule_job(sessions, interval, batch_size=batch_size, on_pass=on_pass).run()
