"""Incidents (read: technician, ops, customer, admin; act: technician, admin) and a device's
derived equipment states and transient faults — each within the caller's device scope
(``server.base.access``: an incident is reached through its device)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from server.api.deps import SessionDep, require_role
from server.api.devices import DeviceIdPath
from server.api.params import Count, Id
from server.api.schemas import Page
from server.api.service_schemas import (
    IncidentAck,
    IncidentAssign,
    IncidentDetailPublic,
    IncidentDispatch,
    IncidentEntryPublic,
    IncidentGuidance,
    IncidentPublic,
    IncidentReopen,
    IncidentResolve,
    IncidentUpdate,
    StateIntervalPublic,
    TransientFaultPublic,
)
from server.base import access
from server.base.users import Principal
from server.db.models import (
    Device,
    Incident,
    IncidentKind,
    IncidentStatus,
    Role,
    StateInterval,
    TransientFault,
)
from server.errors import InvalidInput
from server.incidents import service

__all__ = ["router"]

router = APIRouter(tags=["incidents"])

Reader = Annotated[Principal, require_role(Role.TECHNICIAN, Role.OPS, Role.CUSTOMER)]
Writer = Annotated[Principal, require_role(Role.TECHNICIAN)]
IncidentId = Annotated[Id, Path(description="Incident id")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[Count, Query()]


def _public(incident: Incident, device: Device | None) -> IncidentPublic:
    out = IncidentPublic.model_validate(incident)
    if device is not None:
        out.model, out.customer_id, out.site_id = device.model, device.customer_id, device.site_id
    return out


async def _reach(session: SessionDep, user: Principal, incident_id: int) -> Incident:
    """The incident if its device is in the caller's scope (404 for a customer, 403 otherwise)."""
    incident = await service.get_incident(session, incident_id)
    await access.check_device(session, user, incident.device_id, via=("incident", incident_id))
    return incident


async def _detail(session: SessionDep, incident: Incident) -> IncidentDetailPublic:
    device = await session.get(Device, incident.device_id)
    out = IncidentDetailPublic.model_validate(_public(incident, device).model_dump())
    out.timeline = [
        IncidentEntryPublic.model_validate(entry)
        for entry in await service.list_timeline(session, incident.id)
    ]
    return out


@router.get("/incidents", response_model=Page[IncidentPublic])
async def list_incidents(
    *,
    session: SessionDep,
    user: Reader,
    status: IncidentStatus | None = None,
    device: Annotated[str | None, Query(max_length=64)] = None,
    customer: Annotated[Id | None, Query()] = None,
    site: Annotated[Id | None, Query()] = None,
    model: Annotated[str | None, Query(max_length=256)] = None,
    fault_code: Annotated[str | None, Query(max_length=256)] = None,
    priority: Annotated[int | None, Query(ge=1, le=4)] = None,
    kind: IncidentKind | None = None,
    since: Annotated[datetime | None, Query(description="detected at or after")] = None,
    until: Annotated[datetime | None, Query(description="detected before")] = None,
    open_only: bool = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[IncidentPublic]:
    """Incidents, newest detection first."""
    where = service.IncidentFilter(
        status=status.value if status else None,
        device_id=device,
        customer_id=customer,
        site_id=site,
        model=model,
        fault_code=fault_code,
        priority=priority,
        kind=kind.value if kind else None,
        since=since,
        until=until,
        open_only=open_only,
    )
    scope = access.device_condition(await access.scope_for(session, user))
    rows, total = await service.list_incidents(session, where, limit=limit, offset=offset, scope=scope)
    return Page(items=[_public(i, d) for i, d in rows], total=total, limit=limit, offset=offset)


@router.get("/incidents/{incident_id}", response_model=IncidentDetailPublic)
async def get_incident(incident_id: IncidentId, session: SessionDep, user: Reader) -> IncidentDetailPublic:
    """One incident with its timeline."""
    return await _detail(session, await _reach(session, user, incident_id))


@router.post("/incidents/{incident_id}/ack", response_model=IncidentDetailPublic)
async def acknowledge(
    incident_id: IncidentId, session: SessionDep, user: Writer, body: IncidentAck | None = None
) -> IncidentDetailPublic:
    await _reach(session, user, incident_id)
    incident = await service.acknowledge(session, incident_id, user, text=body.note if body else "")
    return await _detail(session, incident)


@router.post("/incidents/{incident_id}/assign", response_model=IncidentDetailPublic)
async def assign(
    incident_id: IncidentId, body: IncidentAssign, session: SessionDep, user: Writer
) -> IncidentDetailPublic:
    """Give the incident to a user (the first response)."""
    await _reach(session, user, incident_id)
    incident = await service.assign(session, incident_id, user, user=body.user, text=body.note)
    return await _detail(session, incident)


@router.post("/incidents/{incident_id}/dispatch", response_model=IncidentDetailPublic)
async def dispatch(
    incident_id: IncidentId, body: IncidentDispatch, session: SessionDep, user: Writer
) -> IncidentDetailPublic:
    """A field engineer is sent (the first response); ``onsite_at`` records a visit."""
    await _reach(session, user, incident_id)
    incident = await service.dispatch(
        session, incident_id, user, engineer=body.engineer, onsite_at=body.onsite_at, text=body.note
    )
    return await _detail(session, incident)


@router.post("/incidents/{incident_id}/guidance", response_model=IncidentDetailPublic)
async def guidance(
    incident_id: IncidentId, body: IncidentGuidance, session: SessionDep, user: Writer
) -> IncidentDetailPublic:
    """Steps given to the customer (the first response of a ``customer`` resolution)."""
    await _reach(session, user, incident_id)
    incident = await service.guide(session, incident_id, user, steps=body.steps)
    return await _detail(session, incident)


@router.post("/incidents/{incident_id}/resolve", response_model=IncidentDetailPublic)
async def resolve(
    incident_id: IncidentId, body: IncidentResolve, session: SessionDep, user: Writer
) -> IncidentDetailPublic:
    """Resolve with a channel (default: what the evidence says), cause and resolution."""
    await _reach(session, user, incident_id)
    incident = await service.resolve(
        session,
        incident_id,
        user,
        channel=body.channel,
        cause=body.cause,
        resolution=body.resolution,
        onsite_at=body.onsite_at,
        visits=body.visits,
        external=body.external,
        article_id=body.article_id,
        draft_article=body.draft_article,
        article_fixed=body.article_fixed,
    )
    return await _detail(session, incident)


@router.post("/incidents/{incident_id}/reopen", response_model=IncidentDetailPublic)
async def reopen(
    incident_id: IncidentId, session: SessionDep, user: Writer, body: IncidentReopen | None = None
) -> IncidentDetailPublic:
    await _reach(session, user, incident_id)
    incident = await service.reopen(session, incident_id, user, reason=body.reason if body else "")
    return await _detail(session, incident)


@router.post("/incidents/{incident_id}/close", response_model=IncidentDetailPublic)
async def close(incident_id: IncidentId, session: SessionDep, user: Writer) -> IncidentDetailPublic:
    await _reach(session, user, incident_id)
    return await _detail(session, await service.close(session, incident_id, user))


@router.patch("/incidents/{incident_id}", response_model=IncidentDetailPublic)
async def update(
    incident_id: IncidentId, body: IncidentUpdate, session: SessionDep, user: Writer
) -> IncidentDetailPublic:
    """Triage: needs_dispatch, symptom, external, priority (an override)."""
    await _reach(session, user, incident_id)
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None:
            raise InvalidInput(f"{key}: cannot be null", field=key)
    if not changes:
        raise InvalidInput("body: nothing to change", field="body")
    return await _detail(session, await service.update(session, incident_id, user, changes))


@router.get("/devices/{device_id}/states", response_model=list[StateIntervalPublic])
async def device_states(
    *,
    device_id: DeviceIdPath,
    session: SessionDep,
    user: Reader,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> list[StateIntervalPublic]:
    """The device's equipment states overlapping [since, until), oldest first."""
    await access.check_device(session, user, device_id)
    query = select(StateInterval).where(StateInterval.device_id == device_id)
    if since is not None:
        query = query.where((StateInterval.end_s.is_(None)) | (StateInterval.end_s > since.timestamp()))
    if until is not None:
        query = query.where(StateInterval.start_s < until.timestamp())
    rows = await session.scalars(query.order_by(StateInterval.start_s).limit(limit))
    return [StateIntervalPublic.model_validate(row) for row in rows]


@router.get("/devices/{device_id}/transient-faults", response_model=list[TransientFaultPublic])
async def device_transient_faults(
    *,
    device_id: DeviceIdPath,
    session: SessionDep,
    user: Reader,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> list[TransientFaultPublic]:
    """Faults that cleared within the debounce window (no incident), raised in [since, until)."""
    await access.check_device(session, user, device_id)
    query = select(TransientFault).where(TransientFault.device_id == device_id)
    if since is not None:
        query = query.where(TransientFault.raised_at >= since)
    if until is not None:
        query = query.where(TransientFault.raised_at < until)
    rows = await session.scalars(query.order_by(TransientFault.raised_at.desc()).limit(limit))
    return [TransientFaultPublic.model_validate(row) for row in rows]
