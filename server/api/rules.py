"""Preventive-maintenance rules (read: admin, technician, ops; write: admin, technician) and the
alerts they raise. Reference: docs/preventive-maintenance.md.

A technician sees the rules that judge their devices and the alerts of their devices, and
changes only rules that judge nothing outside their scope (``server.maintenance.rules``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

import protocol
from server.api.deps import SessionDep, require_role
from server.api.params import Count, Id
from server.api.schemas import Page
from server.base import access
from server.base.users import Principal
from server.db.models import Role
from server.maintenance import rules

__all__ = ["RuleAlertPublic", "RuleCreate", "RulePublic", "RuleUpdate", "router"]

router = APIRouter(prefix="/rules", tags=["rules"])

Reader = Annotated[Principal, require_role(Role.TECHNICIAN, Role.OPS)]
Writer = Annotated[Principal, require_role(Role.TECHNICIAN)]
RuleIdPath = Annotated[Id, Path(description="Rule id")]

RuleName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+(\.[a-z0-9_-]+)*$", max_length=128)]
Op = Literal["<", "<=", ">", ">="]
Model = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
Duration = Annotated[float, Field(ge=0, le=30 * 86400, description="Seconds the condition must hold")]
Threshold = Annotated[float, Field(allow_inf_nan=False)]


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: RuleName
    metric: MetricName
    op: Op
    value: Threshold
    duration_s: Duration = 0.0
    severity: protocol.Severity = protocol.Severity.WARNING
    model: Model | None = Field(default=None, description="Only devices of this model (null: every model)")
    enabled: bool = True


class RuleUpdate(BaseModel):
    """Only the fields given change; ``model`` may be set to null (every model)."""

    model_config = ConfigDict(extra="forbid")

    name: RuleName | None = None
    metric: MetricName | None = None
    op: Op | None = None
    value: Threshold | None = None
    duration_s: Duration | None = None
    severity: protocol.Severity | None = None
    model: Model | None = None
    enabled: bool | None = None

    @field_validator("name", "metric", "op", "value", "duration_s", "severity", "enabled", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may not be null")
        return value


class RulePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    metric: str
    op: str
    value: float
    duration_s: float
    severity: str
    model: str | None
    enabled: bool
    created_at: datetime


async def _scope(session: AsyncSession, user: Principal) -> ColumnElement[bool] | None:
    return access.device_condition(await access.scope_for(session, user))


class RuleAlertPublic(BaseModel):
    id: int
    rule_id: int
    rule_name: str
    metric: str
    condition: str  # e.g. "printer.fuser.temperature.celsius > 230 for 600s"
    severity: str
    device_id: str
    started_at: datetime  # device time the condition began to hold
    raised_at: datetime  # device time it had held for the rule's duration
    ended_at: datetime | None  # device time it stopped holding (server time if the rule changed)
    value: float  # the reading that raised it
    active: bool


@router.get("/alerts", response_model=Page[RuleAlertPublic])
async def list_alerts(
    *,
    session: SessionDep,
    user: Reader,
    device: Annotated[str | None, Query(max_length=64, description="Device id")] = None,
    rule: Annotated[Id | None, Query(description="Rule id")] = None,
    active: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Count, Query()] = 0,
) -> Page[RuleAlertPublic]:
    """Alerts raised in [since, until) on devices in the caller's scope, newest first."""
    rows, total = await rules.list_alerts(
        session,
        rules.AlertFilter(device_id=device, rule_id=rule, active=active, since=since, until=until),
        limit=limit,
        offset=offset,
        scope=await _scope(session, user),
    )
    items = [
        RuleAlertPublic(
            id=alert.id,
            rule_id=rule_row.id,
            rule_name=rule_row.name,
            metric=rule_row.metric,
            condition=f"{rule_row.metric} {rule_row.op} {rule_row.value:g} for {rule_row.duration_s:g}s",
            severity=rule_row.severity,
            device_id=alert.device_id,
            started_at=alert.started_at,
            raised_at=alert.raised_at,
            ended_at=alert.ended_at,
            value=alert.value,
            active=alert.ended_at is None,
        )
        for alert, rule_row in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("", response_model=Page[RulePublic])
async def list_rules(
    *,
    session: SessionDep,
    user: Reader,
    enabled: bool | None = None,
    metric: Annotated[str | None, Query(max_length=128)] = None,
    model: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Count, Query()] = 0,
) -> Page[RulePublic]:
    """The rules that judge a device in the caller's scope (everyone's: every rule)."""
    rows, total = await rules.list_rules(
        session,
        enabled=enabled,
        metric=metric,
        model=model,
        limit=limit,
        offset=offset,
        scope=await _scope(session, user),
    )
    return Page(
        items=[RulePublic.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )


@router.post("", status_code=201, response_model=RulePublic)
async def create_rule(body: RuleCreate, session: SessionDep, user: Writer) -> RulePublic:
    """A new rule; it judges telemetry stored from now on."""
    fields: dict[str, Any] = body.model_dump()
    fields["severity"] = body.severity.value
    rule = await rules.create_rule(session, actor=user.actor, scope=await _scope(session, user), **fields)
    return RulePublic.model_validate(rule)


@router.get("/{rule_id}", response_model=RulePublic)
async def get_rule(rule_id: RuleIdPath, session: SessionDep, user: Reader) -> RulePublic:
    return RulePublic.model_validate(
        await rules.get_rule(session, rule_id, scope=await _scope(session, user))
    )


@router.patch("/{rule_id}", response_model=RulePublic)
async def update_rule(rule_id: RuleIdPath, body: RuleUpdate, session: SessionDep, user: Writer) -> RulePublic:
    """Change some fields. A changed condition (metric, op, value, duration_s, model) or
    disabling ends the rule's open alerts; the rule then starts again from new telemetry."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    if body.severity is not None:
        changes["severity"] = body.severity.value
    rule = await rules.update_rule(
        session, rule_id, changes, actor=user.actor, scope=await _scope(session, user)
    )
    return RulePublic.model_validate(rule)


@router.delete("/{rule_id}", status_code=204, response_class=Response)
async def delete_rule(rule_id: RuleIdPath, session: SessionDep, user: Writer) -> Response:
    """Delete the rule and its alerts (disable it instead to keep the history)."""
    await rules.delete_rule(session, rule_id, actor=user.actor, scope=await _scope(session, user))
    return Response(status_code=204)
