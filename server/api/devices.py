"""Devices: the fleet list, one device, its telemetry and its events (every role; each caller
sees only the devices in their scope, ``server.base.access``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from server import fleet
from server.api.deps import CurrentUser, SessionDep
from server.api.params import Count
from server.api.schemas import DeviceDetailPublic, DevicePublic, EventPublic, Page, TelemetryPublic
from server.base import access

__all__ = ["DeviceIdPath", "router"]

router = APIRouter(prefix="/devices", tags=["devices"])

DeviceIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$", max_length=64, description="Device id")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[Count, Query()]


@router.get("", response_model=Page[DevicePublic])
async def list_devices(
    *,
    session: SessionDep,
    user: CurrentUser,
    online: bool | None = None,
    model: Annotated[str | None, Query(max_length=256)] = None,
    site: Annotated[str | None, Query(max_length=256)] = None,
    q: Annotated[
        str | None, Query(max_length=128, description="Substring of id, serial, model or site")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DevicePublic]:
    scope = access.device_condition(await access.scope_for(session, user))
    rows, total = await fleet.list_devices(
        session,
        fleet.DeviceFilter(online=online, model=model, site=site, q=q),
        limit=limit,
        offset=offset,
        scope=scope,
    )
    return Page(
        items=[DevicePublic.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{device_id}", response_model=DeviceDetailPublic)
async def get_device(device_id: DeviceIdPath, session: SessionDep, user: CurrentUser) -> DeviceDetailPublic:
    return DeviceDetailPublic.model_validate(await access.check_device(session, user, device_id))


@router.get("/{device_id}/telemetry", response_model=list[TelemetryPublic])
async def get_telemetry(
    *,
    device_id: DeviceIdPath,
    session: SessionDep,
    user: CurrentUser,
    metric: Annotated[str | None, Query(max_length=128)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> list[TelemetryPublic]:
    """Samples in [since, until), newest first."""
    await access.check_device(session, user, device_id)
    rows = await fleet.list_telemetry(
        session, device_id, metric=metric, since=since, until=until, limit=limit
    )
    return [TelemetryPublic.model_validate(row) for row in rows]


@router.get("/{device_id}/events", response_model=Page[EventPublic])
async def get_events(
    *,
    device_id: DeviceIdPath,
    session: SessionDep,
    user: CurrentUser,
    type: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[EventPublic]:
    """Events in [since, until), newest first."""
    await access.check_device(session, user, device_id)
    rows, total = await fleet.list_events(
        session, device_id, type_=type, since=since, until=until, limit=limit, offset=offset
    )
    return Page(
        items=[EventPublic.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )
