"""What people do with incidents, and how they find them.

Every action locks the incident row, checks its status (a clash is :class:`Conflict`), changes
it, appends a timeline entry and an audit row (``incident.<action>``, actor ``user:<name>``) and
commits. Any action implies an acknowledgement (``t_ack``); assigning, dispatching, giving
guidance (and commands to the device, seen by the sweeper) are the first response
(``t_respond``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

import protocol
from server.base import audit
from server.base.timeline import note
from server.base.users import Principal
from server.db.models import (
    Channel,
    Command,
    CommandState,
    Device,
    Incident,
    IncidentEntry,
    IncidentStatus,
    User,
)
from server.db.types import utcnow
from server.errors import Conflict, InvalidInput, NotFound
from server.fleet.devices import placement_conditions
from server.incidents import sync
from server.knowledge import capture

__all__ = [
    "IncidentFilter",
    "acknowledge",
    "assign",
    "close",
    "dispatch",
    "filter_conditions",
    "get_incident",
    "guide",
    "list_incidents",
    "list_timeline",
    "note_session",
    "reopen",
    "resolve",
    "update",
]

OPEN, ACK, RESOLVED, CLOSED = (s.value for s in IncidentStatus)


@dataclass(frozen=True, slots=True)
class IncidentFilter:
    status: str | None = None
    device_id: str | None = None
    customer_id: int | None = None
    site_id: int | None = None
    model: str | None = None
    fault_code: str | None = None  # any code that joined the incident
    priority: int | None = None
    kind: str | None = None
    since: datetime | None = None  # detected in [since, until)
    until: datetime | None = None
    open_only: bool = False  # open or acknowledged


def filter_conditions(where: IncidentFilter) -> list[ColumnElement[bool]]:
    """The SQL conditions of ``where`` over ``Incident`` (and ``Device``, for customer, site and
    model: join the incident's device). Public so that other incident counts — the console's
    open incidents by priority — filter exactly as :func:`list_incidents` does."""
    conditions: list[ColumnElement[bool]] = []
    if where.status is not None:
        conditions.append(Incident.status == where.status)
    if where.open_only:
        conditions.append(Incident.status.in_([OPEN, ACK]))
    if where.device_id is not None:
        conditions.append(Incident.device_id == where.device_id)
    conditions.extend(placement_conditions(where.customer_id, where.site_id, where.model))
    if where.fault_code is not None:
        # codes is a JSON list: match the first code exactly, others through the text form
        conditions.append(
            or_(
                Incident.fault_code == where.fault_code,
                cast(Incident.codes, Text).contains(f'"{where.fault_code}"', autoescape=True),
            )
        )
    if where.priority is not None:
        conditions.append(Incident.priority == where.priority)
    if where.kind is not None:
        conditions.append(Incident.kind == where.kind)
    if where.since is not None:
        conditions.append(Incident.t_detect >= where.since)
    if where.until is not None:
        conditions.append(Incident.t_detect < where.until)
    return conditions


async def list_incidents(
    session: AsyncSession,
    where: IncidentFilter,
    *,
    limit: int = 100,
    offset: int = 0,
    scope: ColumnElement[bool] | None = None,
) -> tuple[list[tuple[Incident, Device]], int]:
    """Incidents matching ``where`` with their device, newest detection first, and the total.
    ``scope``: the caller's device condition (``server.base.access.device_condition``)."""
    conditions = filter_conditions(where) + ([] if scope is None else [scope])
    base = select(Incident, Device).join(Device, Device.id == Incident.device_id).where(*conditions)
    total = await session.scalar(
        select(func.count())
        .select_from(Incident)
        .join(Device, Device.id == Incident.device_id)
        .where(*conditions)
    )
    rows = await session.execute(
        base.order_by(Incident.t_detect.desc(), Incident.id.desc()).limit(limit).offset(offset)
    )
    return [(incident, device) for incident, device in rows], total or 0


async def get_incident(session: AsyncSession, incident_id: int, *, lock: bool = False) -> Incident:
    query = select(Incident).where(Incident.id == incident_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    incident = await session.scalar(query)
    if incident is None:
        raise NotFound("incident", incident_id)
    return incident


async def list_timeline(session: AsyncSession, incident_id: int) -> list[IncidentEntry]:
    rows = await session.scalars(
        select(IncidentEntry)
        .where(IncidentEntry.incident_id == incident_id)
        .order_by(IncidentEntry.ts, IncidentEntry.id)
    )
    return list(rows)


# -- actions ------------------------------------------------------------------------------------


def _touch(incident: Incident, now: datetime) -> None:
    """Any action by a person acknowledges the incident."""
    if incident.t_ack is None:
        incident.t_ack = now
    if incident.status == OPEN:
        incident.status = ACK


def _respond(incident: Incident, at: datetime) -> None:
    if incident.t_respond is None or at < incident.t_respond:
        incident.t_respond = at


def _not_done(incident: Incident, action: str) -> None:
    if incident.status in (RESOLVED, CLOSED):
        raise Conflict(f"incident {incident.id} is {incident.status}: cannot {action} (reopen it first)")


def _audit(session: AsyncSession, who: Principal, action: str, incident: Incident, **detail: Any) -> None:
    audit.record(
        session,
        actor=who.actor,
        action=f"incident.{action}",
        target=f"incident:{incident.id}",
        detail={"device_id": incident.device_id, **detail},
    )


async def acknowledge(session: AsyncSession, incident_id: int, who: Principal, *, text: str = "") -> Incident:
    incident = await get_incident(session, incident_id, lock=True)
    _not_done(incident, "acknowledge")
    if incident.status == ACK:
        raise Conflict(f"incident {incident.id} is already acknowledged")
    now = utcnow()
    _touch(incident, now)
    note(session, incident, "acknowledged", actor=who.actor, ts=now, note=text)
    _audit(session, who, "acknowledged", incident, note=text)
    await session.commit()
    return incident


async def assign(
    session: AsyncSession, incident_id: int, who: Principal, *, user: str, text: str = ""
) -> Incident:
    incident = await get_incident(session, incident_id, lock=True)
    _not_done(incident, "assign")
    if await session.scalar(select(User.id).where(User.name == user)) is None:
        raise InvalidInput(f"user: no user {user!r}", field="user")
    now = utcnow()
    _touch(incident, now)
    _respond(incident, now)
    incident.assigned_to = user
    note(session, incident, "assigned", actor=who.actor, ts=now, user=user, note=text)
    _audit(session, who, "assigned", incident, user=user)
    await session.commit()
    return incident


async def dispatch(
    session: AsyncSession,
    incident_id: int,
    who: Principal,
    *,
    engineer: str,
    onsite_at: datetime | None = None,
    text: str = "",
) -> Incident:
    """A field engineer is sent (the first response); with ``onsite_at``, one visit began then."""
    incident = await get_incident(session, incident_id, lock=True)
    _not_done(incident, "dispatch")
    now = utcnow()
    if onsite_at is not None and onsite_at > now:
        raise InvalidInput("onsite_at: cannot be in the future", field="onsite_at")
    _touch(incident, now)
    _respond(incident, now)
    incident.needs_dispatch = True
    note(session, incident, "dispatched", actor=who.actor, ts=now, engineer=engineer, note=text)
    if onsite_at is not None:
        _onsite(session, incident, who, onsite_at, engineer)
    _audit(
        session,
        who,
        "dispatched",
        incident,
        engineer=engineer,
        onsite_at=None if onsite_at is None else onsite_at.isoformat(),
    )
    await session.commit()
    return incident


def _onsite(session: AsyncSession, incident: Incident, who: Principal, at: datetime, engineer: str) -> None:
    if incident.t_onsite is None or at < incident.t_onsite:
        incident.t_onsite = at
    incident.visits += 1
    note(session, incident, "onsite", actor=who.actor, ts=at, engineer=engineer, visit=incident.visits)


async def guide(session: AsyncSession, incident_id: int, who: Principal, *, steps: str) -> Incident:
    """Guidance given to the customer (the first response of a ``customer`` resolution)."""
    incident = await get_incident(session, incident_id, lock=True)
    _not_done(incident, "give guidance")
    now = utcnow()
    _touch(incident, now)
    _respond(incident, now)
    note(session, incident, "guidance", actor=who.actor, ts=now, steps=steps)
    _audit(session, who, "guidance", incident)
    await session.commit()
    return incident


async def note_session(
    session: AsyncSession,
    incident_id: int,
    actor: str,
    kind: str,
    *,
    at: datetime,
    respond: bool = False,
    **detail: Any,
) -> Incident | None:
    """A remote session's step on the incident's timeline (``session.<kind>``), in the caller's
    transaction. ``respond``: opening a session is the first response (``t_respond``) and an
    acknowledgement. A resolved or closed incident only gets the entry."""
    incident = await session.get(Incident, incident_id)
    if incident is None:
        return None
    if respond and incident.status in (OPEN, ACK):
        _touch(incident, at)
        _respond(incident, at)
    note(session, incident, f"session.{kind}", actor=actor, ts=at, **detail)
    return incident


async def _remote_evidence(session: AsyncSession, incident: Incident) -> list[str]:
    """Succeeded commands people sent to the device during the incident's last episode."""
    start = incident.episodes[-1]["start_s"] if incident.episodes else incident.fault_s
    rows = await session.scalars(
        select(Command.id)
        .join(User, User.name == Command.issuer)
        .where(
            Command.device_id == incident.device_id,
            Command.state == CommandState.SUCCEEDED.value,
            Command.issued_at >= sync.dt(start - sync.EPS),
            Command.action.not_in(sorted(protocol.CONTROL_ACTIONS)),  # asking consent fixes nothing
        )
    )
    return list(rows)


async def _entry_kinds(session: AsyncSession, incident_id: int) -> set[str]:
    return set(
        await session.scalars(select(IncidentEntry.kind).where(IncidentEntry.incident_id == incident_id))
    )


async def resolve(
    session: AsyncSession,
    incident_id: int,
    who: Principal,
    *,
    channel: Channel | None,
    cause: str,
    resolution: str,
    onsite_at: datetime | None = None,
    visits: int | None = None,
    external: bool | None = None,
    article_id: int | None = None,
    draft_article: bool | None = None,
    article_fixed: bool = True,
) -> Incident:
    """Resolve with a channel; without one it comes from the evidence: a person's successful
    command → remote, a dispatch or visit → field, guidance → customer; else it must be given.
    ``article_id`` links a knowledge article (``article_fixed``: its fix worked), or
    ``draft_article`` drafts one from this resolution (None: when the fix is new; server/knowledge/capture.py)."""
    incident = await get_incident(session, incident_id, lock=True)
    _not_done(incident, "resolve")
    now = utcnow()
    if onsite_at is not None and onsite_at > now:
        raise InvalidInput("onsite_at: cannot be in the future", field="onsite_at")
    kinds = await _entry_kinds(session, incident.id)
    evidence = await _remote_evidence(session, incident)
    if channel is None:
        if evidence:
            channel = Channel.REMOTE
        elif "dispatched" in kinds or incident.visits or onsite_at is not None or visits:
            channel = Channel.FIELD
        elif "guidance" in kinds:
            channel = Channel.CUSTOMER
        else:
            raise InvalidInput(
                "channel: required (no command, dispatch or guidance on record says how it was resolved)",
                field="channel",
            )
    _touch(incident, now)
    if onsite_at is not None:
        _onsite(session, incident, who, onsite_at, engineer=who.name)
    if visits is not None:
        incident.visits = visits
    if channel is Channel.FIELD and incident.visits == 0:
        incident.visits = 1
    incident.cause, incident.resolution = cause, resolution
    incident.status = RESOLVED
    incident.channel = channel.value
    incident.t_resolved = now
    incident.resolved_by = who.actor
    if external is not None and external != incident.external:
        incident.external = external
        await sync.flag_external(session, incident, external)
    note(
        session,
        incident,
        "resolved",
        actor=who.actor,
        ts=now,
        channel=channel.value,
        cause=cause,
        resolution=resolution,
        visits=incident.visits,
        evidence=evidence,
    )
    _audit(session, who, "resolved", incident, channel=channel.value, visits=incident.visits)
    await capture.on_resolve(
        session, incident, who, article_id=article_id, draft=draft_article, fixed=article_fixed,
        evidence=evidence, now=now,
    )  # fmt: skip
    await session.commit()
    return incident


async def reopen(session: AsyncSession, incident_id: int, who: Principal, *, reason: str = "") -> Incident:
    """Back to open: the problem is not solved. The server no longer resolves it by itself."""
    incident = await get_incident(session, incident_id, lock=True)
    if incident.status not in (RESOLVED, CLOSED):
        raise Conflict(f"incident {incident.id} is {incident.status}: only a resolved or closed one reopens")
    incident.status = OPEN
    incident.reopened += 1
    incident.t_resolved = None
    incident.t_closed = None
    incident.channel = None
    incident.resolved_by = None
    incident.auto_resolve = False
    note(session, incident, "reopened", actor=who.actor, reason=reason, reopened=incident.reopened)
    _audit(session, who, "reopened", incident, reason=reason)
    await capture.on_reopen(session, incident, who, utcnow())  # the linked articles did not fix it
    await session.commit()
    return incident


async def close(session: AsyncSession, incident_id: int, who: Principal) -> Incident:
    incident = await get_incident(session, incident_id, lock=True)
    if incident.status != RESOLVED:
        raise Conflict(f"incident {incident.id} is {incident.status}: only a resolved incident can be closed")
    now = utcnow()
    incident.status = CLOSED
    incident.t_closed = now
    note(session, incident, "closed", actor=who.actor, ts=now)
    _audit(session, who, "closed", incident)
    await session.commit()
    return incident


async def update(
    session: AsyncSession, incident_id: int, who: Principal, changes: dict[str, Any]
) -> Incident:
    """Triage: ``needs_dispatch``, ``symptom``, ``external``, ``priority`` (an override)."""
    incident = await get_incident(session, incident_id, lock=True)
    for key, value in changes.items():
        setattr(incident, key, value)
    if "external" in changes:
        await sync.flag_external(session, incident, bool(changes["external"]))
    now = utcnow()
    _touch(incident, now)
    note(session, incident, "updated", actor=who.actor, ts=now, **changes)
    _audit(session, who, "updated", incident, **changes)
    await session.commit()
    return incident
