"""What the API accepts and returns, named by direction; kept apart from the tables."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "AuditEntryPublic",
    "CommandCreate",
    "CommandDetailPublic",
    "CommandPublic",
    "CommandReplyPublic",
    "DeviceDetailPublic",
    "DevicePublic",
    "ErrorBody",
    "ErrorPublic",
    "EventPublic",
    "HealthPublic",
    "IngestStatsPublic",
    "Page",
    "TelemetryPublic",
]

T = TypeVar("T")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorPublic(BaseModel):
    error: ErrorBody


class HealthPublic(BaseModel):
    status: str  # "ok" | "degraded"
    db: bool
    mqtt: bool


class DevicePublic(_Out):
    id: str
    online: bool
    state: str | None
    first_seen: datetime
    last_seen: datetime | None
    status_changed_at: datetime | None
    model: str | None
    serial: str | None
    firmware: str | None
    site: str | None
    # who it belongs to (docs/incidents.md): set with PATCH /devices/{id}
    customer_id: int | None = None
    site_id: int | None = None
    criticality: int | None = None
    decommissioned_at: datetime | None = None


class DeviceDetailPublic(DevicePublic):
    inventory: dict[str, Any] | None


class TelemetryPublic(_Out):
    metric: str
    ts: datetime
    value: float


class EventPublic(_Out):
    id: int
    seq: int
    type: str
    code: str | None
    severity: str
    ts: datetime
    received_at: datetime
    detail: str
    data: dict[str, Any]


ActionName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)*$", max_length=64)]


class CommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: ActionName
    args: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(
        default=None, gt=0, le=86400, description="Acceptance window and result deadline, seconds"
    )
    session_id: Annotated[str, StringConstraints(max_length=256)] | None = None
    wait: bool = Field(default=False, description="Answer once the command is finished (or timed out)")


class CommandReplyPublic(_Out):
    device_seq: int
    type: str
    ts: datetime
    received_at: datetime
    payload: dict[str, Any]


class CommandPublic(_Out):
    id: str
    device_id: str
    action: str
    args: dict[str, Any]
    issuer: str
    session_id: str | None
    state: str
    issued_at: datetime
    expires_at: datetime
    deadline_at: datetime
    sent_at: datetime | None
    accepted_at: datetime | None
    finished_at: datetime | None
    ok: bool | None
    reason: str | None
    output: str | None
    data: dict[str, Any] | None


class CommandDetailPublic(CommandPublic):
    replies: list[CommandReplyPublic] = Field(default_factory=list)


class AuditEntryPublic(_Out):
    id: int
    ts: datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]
    result: str
    chain_seq: int | None  # null until sealed into the hash chain (within a second or so)
    hash: str | None


class IngestStatsPublic(BaseModel):
    received: int
    stored: int
    duplicates: int
    malformed: dict[str, int]
    malformed_total: int
    refused: dict[str, int]  # revoked, retired (server/ingest/refusals.py)
    refused_total: int
    quarantined: dict[str, int]  # by exception class (GET /ingest/quarantine)
    quarantined_total: int
    quarantine_failed: int
    batches: int
    last_batch_size: int
    last_batch_latency_ms: float
    db_retries: int
    uptime_s: float
    mqtt_connected: bool
