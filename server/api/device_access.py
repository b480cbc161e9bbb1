"""``POST /devices/{id}/revoke``: take a device's identity away (admin only).

The registry marks it ``revoked_at``; ingest refuses its messages within about a second, and the
broker denies it everything at the next access sync (server/broker_access.py) where the server
runs beside the broker. Its certificates stay valid for the CA until ``fleetcare certs revoke``
is run where the CA lives: the response says so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from server.api.deps import RuntimeDep, SessionDep, require_role
from server.api.devices import DeviceIdPath
from server.base.users import Principal
from server.broker_access import revoke_device
from server.db.models import Role

__all__ = ["router"]

router = APIRouter(tags=["devices"])

Admin = Annotated[Principal, require_role(Role.ADMIN)]


class DeviceRevoke(BaseModel):
    reason: str | None = Field(default=None, max_length=500, description="Why, for the audit log.")


class DeviceRevokedPublic(BaseModel):
    device_id: str
    revoked_at: datetime
    broker: str = Field(description="What happens on the broker, and what an operator must still do.")


@router.post("/devices/{device_id}/revoke", response_model=DeviceRevokedPublic)
async def revoke(
    device_id: DeviceIdPath,
    session: SessionDep,
    runtime: RuntimeDep,
    user: Admin,
    body: DeviceRevoke | None = None,
) -> DeviceRevokedPublic:
    """Idempotent: revoking a revoked device changes nothing and returns the first time."""
    device = await revoke_device(session, device_id, actor=user.actor, reason=body.reason if body else None)
    assert device.revoked_at is not None
    mqtt = runtime.settings.mqtt
    if mqtt.enabled and mqtt.broker_acl_file is not None:
        broker = (
            f"denied in {mqtt.broker_acl_file} within {mqtt.access_sync_interval:g} s; "
            "run `fleetcare certs revoke` on the CA host to revoke its certificates too"
        )
    else:
        broker = (
            "ingest refuses it; this server does not manage the broker's ACL (mqtt.broker_acl_file): "
            "run `fleetcare certs revoke` where the broker runs to cut its connection off"
        )
    return DeviceRevokedPublic(device_id=device.id, revoked_at=device.revoked_at, broker=broker)
