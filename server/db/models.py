"""Tables. The schema itself is owned by the Alembic migrations in ``server/migrations``;
these mappings must match them (``tests/server/test_migrations.py`` checks)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

from server.db.types import BigId, Json, UtcDateTime, utcnow

__all__ = [
    "ApiToken",
    "AuditEntry",
    "Base",
    "Channel",
    "Command",
    "CommandReply",
    "CommandState",
    "Customer",
    "Device",
    "DeviceState",
    "Event",
    "Guide",
    "GuideRun",
    "Incident",
    "IncidentEntry",
    "IncidentKind",
    "IncidentStatus",
    "Message",
    "RemoteSession",
    "Role",
    "Rule",
    "RuleAlert",
    "RuleState",
    "SessionEntry",
    "SessionState",
    "Site",
    "StateInterval",
    "StateTracker",
    "StatusRecord",
    "TechnicianAssignment",
    "TelemetrySample",
    "TransientFault",
    "User",
    "epoch",
]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Role(StrEnum):
    ADMIN = "admin"
    TECHNICIAN = "technician"  # sessions and commands on the customers assigned to them
    OPS = "ops"  # reads fleet, incidents and KPIs
    CUSTOMER = "customer"  # reads their own devices, incidents, KPIs; works guided steps
    PROVISIONING = "provisioning"


class CommandState(StrEnum):
    """``queued → sent → accepted|rejected → succeeded|failed|expired|timed_out``."""

    QUEUED = "queued"  # recorded, not yet acknowledged by the broker
    SENT = "sent"  # the broker returned PUBACK
    ACCEPTED = "accepted"  # the device's guard accepted it
    REJECTED = "rejected"  # the device's guard refused it (terminal)
    SUCCEEDED = "succeeded"  # result ok=true (terminal)
    FAILED = "failed"  # result ok=false or error (terminal)
    EXPIRED = "expired"  # neither accepted nor rejected before expires_at (terminal)
    TIMED_OUT = "timed_out"  # accepted, no result before deadline_at (terminal)
    CANCELLED = "cancelled"  # stopped on request: the device answered error/Cancelled (terminal)

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        CommandState.REJECTED,
        CommandState.SUCCEEDED,
        CommandState.FAILED,
        CommandState.EXPIRED,
        CommandState.TIMED_OUT,
        CommandState.CANCELLED,
    }
)


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seen: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    status_changed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    state: Mapped[str | None] = mapped_column(String(16))
    inventory: Mapped[dict[str, Any] | None] = mapped_column(Json)
    model: Mapped[str | None] = mapped_column(String(256), index=True)
    serial: Mapped[str | None] = mapped_column(String(256))
    firmware: Mapped[str | None] = mapped_column(String(256))
    site: Mapped[str | None] = mapped_column(String(256), index=True)  # as reported in the inventory
    customer_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("customers.id"), index=True)
    site_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("sites.id"), index=True)
    criticality: Mapped[int | None] = mapped_column(Integer)  # None: inherit from site, then customer
    decommissioned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    """Its certificate identity was revoked: the broker denies it and ingest refuses its messages."""


class Message(Base):
    """Every up-message ever stored, by its idempotency key."""

    __tablename__ = "messages"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class QuarantinedMessage(Base):
    """An up-message whose handling raised something unexpected: kept with the reason, out of
    the ingest path, so one message can never stop ingestion (docs/security.md)."""

    __tablename__ = "quarantined_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    topic: Mapped[str] = mapped_column(String(256))
    device_id: Mapped[str | None] = mapped_column(String(64), index=True)  # from the topic, if any
    seq: Mapped[int | None] = mapped_column(BigId)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    error: Mapped[str] = mapped_column(String(256))  # exception class
    reason: Mapped[str] = mapped_column(Text)  # what it said, for the operator


class TelemetrySample(Base):
    __tablename__ = "telemetry"
    __table_args__ = (Index("ix_telemetry_device_metric_ts", "device_id", "metric", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(128))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    value: Mapped[float] = mapped_column(Float)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("device_id", "seq"),
        Index("ix_events_device_ts", "device_id", "ts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigId)
    type: Mapped[str] = mapped_column(String(64), index=True)
    code: Mapped[str | None] = mapped_column(String(256))
    severity: Mapped[str] = mapped_column(String(16))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    detail: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class Command(Base):
    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_device_issued", "device_id", "issued_at"),
        Index("ix_commands_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    issuer: Mapped[str] = mapped_column(String(256))
    session_id: Mapped[str | None] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16), default=CommandState.QUEUED.value)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    deadline_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ok: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(256))
    output: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(Json)
    signed: Mapped[str] = mapped_column(Text)  # the signed wire payload, re-published while queued
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # migration 0006


class CommandReply(Base):
    __tablename__ = "command_replies"
    __table_args__ = (UniqueConstraint("command_id", "device_seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    command_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("commands.id", ondelete="CASCADE"), index=True
    )
    device_seq: Mapped[int] = mapped_column(BigId)
    type: Mapped[str] = mapped_column(String(16))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    payload: Mapped[dict[str, Any]] = mapped_column(Json)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # migration 0006: an Argon2id hash (None: token-only user); the customer a `customer` user
    # belongs to; a disabled user's tokens stop working
    password_hash: Mapped[str | None] = mapped_column(String(256))
    customer_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class TechnicianAssignment(Base):
    """Which customers' devices a technician may work on (migration 0006)."""

    __tablename__ = "technician_assignments"

    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiToken(Base):
    """Only the SHA-256 of a token is stored; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AuditEntry(Base):
    """Append-only and hash-chained (migration 0006): rows are inserted with ``chain_seq`` and
    ``hash`` unset; the sealer (server/services/audit.py) then numbers them 1, 2, 3 … and sets
    ``hash = sha256(prev_hash ‖ canonical row)``, so an altered, removed or re-ordered sealed row
    is detected by ``fleetcare server audit verify``."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_ts", "ts"),
        Index("ix_audit_log_actor", "actor"),
        UniqueConstraint("chain_seq"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(256))
    detail: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    result: Mapped[str] = mapped_column(String(64))
    chain_seq: Mapped[int | None] = mapped_column(BigId)
    hash: Mapped[str | None] = mapped_column(String(64))


# --- service: customers, incidents, equipment state, preventive maintenance -------------------


def epoch(value: datetime | None) -> float | None:
    """Seconds since 1970 (UTC). Incidents and state intervals keep these next to their
    timestamps so KPI queries do interval arithmetic in SQL identically on both backends."""
    return None if value is None else value.timestamp()


class DeviceState(StrEnum):
    """Equipment state per instant (shared/KPIS.md). ``unknown``: the server has no data."""

    RUNNING = "running"
    DEGRADED = "degraded"
    DOWN = "down"
    MAINTENANCE = "maintenance"
    UNKNOWN = "unknown"


class IncidentKind(StrEnum):
    FAULT = "fault"  # a fault that makes the device down or degraded
    OFFLINE = "offline"  # no data past the grace period (possibly external)


class IncidentStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Channel(StrEnum):
    """How a resolved incident was resolved."""

    AUTO = "auto"  # cleared with no human action
    CUSTOMER = "customer"  # the customer followed guided steps
    REMOTE = "remote"  # a technician's remote session or command
    FIELD = "field"  # an engineer was dispatched


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    criticality: Mapped[int] = mapped_column(Integer, default=3)  # 1 low … 5 life-critical
    # contract: covered hours ({"days": [0-6], "start": "08:00", "end": "18:00", "tz": "Europe/Berlin"};
    # None = 24x7) and the cost of one field dispatch, for "dispatches avoided" value
    contract_hours: Mapped[dict[str, Any] | None] = mapped_column(Json)
    cost_per_dispatch: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Site(Base):
    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("customer_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(Integer, ForeignKey("customers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    criticality: Mapped[int | None] = mapped_column(Integer)  # None: the customer's
    attended: Mapped[bool] = mapped_column(Boolean, default=False)  # migration 0006: consent for any session


_KPI_COVER = ("state", "device_id", "external", "planned_end")  # the KPI queries read only these
_KPI_FAILURE = ("effect", "external")


class StateInterval(Base):
    """One device's equipment state over [start, end); ``end`` None while it lasts. Derived from
    the event history (device time) and presence; rebuilt for a device when late data arrives."""

    __tablename__ = "state_intervals"
    __table_args__ = (
        Index("ix_state_intervals_device_start", "device_id", "start_s"),
        Index("ix_state_intervals_state_start", "state", "start_s"),
        # migration 0004 (KPIs): intervals overlapping a period, by their end or by their start
        Index("ix_state_intervals_end_start", "end_s", "start_s", *_KPI_COVER),
        Index("ix_state_intervals_start_end", "start_s", "end_s", *_KPI_COVER),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))  # a DeviceState value
    start: Mapped[datetime] = mapped_column(UtcDateTime)
    end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float | None] = mapped_column(Float)
    external: Mapped[bool] = mapped_column(Boolean, default=False)  # customer power/network loss
    planned_end: Mapped[datetime | None] = mapped_column(UtcDateTime)  # maintenance: announced end

    @validates("start", "end")
    def _keep_epoch(self, key: str, value: datetime | None) -> datetime | None:
        setattr(self, f"{key}_s", epoch(value))
        return value


class Incident(Base):
    """One failure episode of one device: overlapping faults join it. Timestamps follow
    shared/KPIS.md; ``*_s`` mirror them as epoch seconds for SQL arithmetic."""

    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_device_fault", "device_id", "fault_s"),
        Index("ix_incidents_resolved", "resolved_s"),
        Index("ix_incidents_status", "status"),
        # migration 0004 (KPIs): incidents by period, and repeats of a fault code on a device
        Index("ix_incidents_detect", "detect_s"),
        Index("ix_incidents_fault", "fault_s"),
        Index("ix_incidents_restored", "restored_s"),
        Index("ix_incidents_device_code_fault", "device_id", "fault_code", "fault_s", "detect_s"),
        Index("ix_incidents_device_code_restored", "device_id", "fault_code", "restored_s", *_KPI_FAILURE),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # IncidentKind
    status: Mapped[str] = mapped_column(String(16), default=IncidentStatus.OPEN.value)
    fault_code: Mapped[str | None] = mapped_column(String(256), index=True)  # the first fault's code
    codes: Mapped[list[str]] = mapped_column(Json, default=list)  # every fault code that joined
    severity: Mapped[str] = mapped_column(String(16))
    effect: Mapped[str] = mapped_column(String(16))  # "down" | "degraded"
    priority: Mapped[int] = mapped_column(Integer, default=3)  # 1 urgent … 4 low
    external: Mapped[bool] = mapped_column(Boolean, default=False)
    t_fault: Mapped[datetime] = mapped_column(UtcDateTime)  # device time, skew-corrected, <= t_detect
    t_detect: Mapped[datetime] = mapped_column(UtcDateTime)
    t_ack: Mapped[datetime | None] = mapped_column(UtcDateTime)
    t_respond: Mapped[datetime | None] = mapped_column(UtcDateTime)
    t_onsite: Mapped[datetime | None] = mapped_column(UtcDateTime)
    t_restored: Mapped[datetime | None] = mapped_column(UtcDateTime)
    t_resolved: Mapped[datetime | None] = mapped_column(UtcDateTime)
    t_closed: Mapped[datetime | None] = mapped_column(UtcDateTime)
    fault_s: Mapped[float] = mapped_column(Float)
    detect_s: Mapped[float] = mapped_column(Float)
    ack_s: Mapped[float | None] = mapped_column(Float)
    respond_s: Mapped[float | None] = mapped_column(Float)
    restored_s: Mapped[float | None] = mapped_column(Float)
    resolved_s: Mapped[float | None] = mapped_column(Float)
    channel: Mapped[str | None] = mapped_column(String(16))  # Channel, set on resolve
    assigned_to: Mapped[str | None] = mapped_column(String(128))
    symptom: Mapped[str] = mapped_column(Text, default="")
    cause: Mapped[str] = mapped_column(Text, default="")
    resolution: Mapped[str] = mapped_column(Text, default="")
    needs_dispatch: Mapped[bool] = mapped_column(Boolean, default=False)  # triage under the baseline policy
    remote_used: Mapped[bool] = mapped_column(Boolean, default=False)  # a remote session/command was used
    visits: Mapped[int] = mapped_column(Integer, default=0)  # field visits
    reopened: Mapped[int] = mapped_column(Integer, default=0)
    # migration 0003 (docs/incidents.md): the failure episodes this incident covers (one, more
    # once reopened) as [{"start_s", "end_s", "detect_s", "end_received_s", "codes", "effect",
    # "severity"}]; who resolved it ("server" or "user:<name>"); and whether the server may still
    # resolve it from evidence (a person who reopens an incident takes that over)
    episodes: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    resolved_by: Mapped[str | None] = mapped_column(String(256))
    auto_resolve: Mapped[bool] = mapped_column(Boolean, default=True)

    @validates("t_fault", "t_detect", "t_ack", "t_respond", "t_restored", "t_resolved")
    def _keep_epoch(self, key: str, value: datetime | None) -> datetime | None:
        setattr(self, key.removeprefix("t_") + "_s", epoch(value))
        return value


class IncidentEntry(Base):
    """The incident's timeline: events, acknowledgements, commands, resolution — append-only."""

    __tablename__ = "incident_timeline"
    __table_args__ = (Index("ix_incident_timeline_kind_incident", "kind", "incident_id"),)  # 0012

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    ts: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(64))  # e.g. fault.raised, acknowledged, command.sent
    actor: Mapped[str] = mapped_column(String(256))
    detail: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class TransientFault(Base):
    """A fault that cleared itself within the debounce window: counted, opens no incident."""

    __tablename__ = "transient_faults"
    __table_args__ = (
        Index("ix_transient_faults_device_raised", "device_id", "raised_at"),
        Index("ix_transient_faults_raised", "raised_at"),  # migration 0004 (KPIs)
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(256))
    raised_at: Mapped[datetime] = mapped_column(UtcDateTime)
    cleared_at: Mapped[datetime] = mapped_column(UtcDateTime)


class StatusRecord(Base):
    """Every status message (migration 0003): presence and reported state over time, so state
    intervals and offline incidents can be rebuilt from history like everything else."""

    __tablename__ = "status_history"
    __table_args__ = (
        UniqueConstraint("device_id", "seq"),
        Index("ix_status_history_device_received", "device_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigId)
    ts: Mapped[datetime] = mapped_column(UtcDateTime)  # device clock (the last will: its connect time)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    online: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(256), default="")


class StateTracker(Base):
    """Where the derivation of one device's states and incidents stands (migration 0003): the
    position processed so far, the next time something falls due (debounce, grace, planned end),
    and the derivation's state as JSON. Disposable: a rebuild recreates it from history."""

    __tablename__ = "state_trackers"

    device_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    mark_s: Mapped[float | None] = mapped_column(Float)
    mark_seq: Mapped[int | None] = mapped_column(BigId)
    due_s: Mapped[float | None] = mapped_column(Float, index=True)
    dirty: Mapped[bool] = mapped_column(Boolean, default=False)  # rebuild at the next sweep
    snapshot: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Rule(Base):
    """Preventive maintenance: warn when ``metric op value`` holds for ``duration_s``."""

    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    metric: Mapped[str] = mapped_column(String(128), index=True)
    op: Mapped[str] = mapped_column(String(2))  # one of < <= > >=
    value: Mapped[float] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    model: Mapped[str | None] = mapped_column(String(256))  # None: every model
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # evaluation cursor (migration 0005): telemetry ids up to this one have been evaluated;
    # set to the newest id when the rule is created, re-enabled or its condition changes
    last_sample_id: Mapped[int | None] = mapped_column(BigId)


class RuleAlert(Base):
    __tablename__ = "rule_alerts"
    __table_args__ = (Index("ix_rule_alerts_device_started", "device_id", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rule_id: Mapped[int] = mapped_column(Integer, ForeignKey("rules.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)  # when the condition began to hold
    raised_at: Mapped[datetime] = mapped_column(UtcDateTime)  # when it had held for duration_s
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    value: Mapped[float] = mapped_column(Float)


class RuleState(Base):
    """Where the evaluation of one rule on one device stands (migration 0005): the device time of
    the newest sample evaluated, since when the condition holds, and the alert it raised."""

    __tablename__ = "rule_states"

    rule_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    last_ts: Mapped[datetime] = mapped_column(UtcDateTime)
    since: Mapped[datetime | None] = mapped_column(UtcDateTime)  # None: the condition does not hold
    alert_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("rule_alerts.id", ondelete="SET NULL"))


# --- remote sessions and guided self-resolution (migration 0006) ------------------------------


class SessionState(StrEnum):
    """``requested → awaiting_consent → active → closed | expired | denied`` (docs/sessions.md).

    ``requested`` is also the queue: a session waits there while another is active on the device.
    """

    REQUESTED = "requested"
    AWAITING_CONSENT = "awaiting_consent"
    ACTIVE = "active"
    CLOSED = "closed"
    EXPIRED = "expired"
    DENIED = "denied"

    @property
    def terminal(self) -> bool:
        return self in (SessionState.CLOSED, SessionState.EXPIRED, SessionState.DENIED)


class RemoteSession(Base):
    """A technician's remote session on one device, optionally for one incident."""

    __tablename__ = "remote_sessions"
    __table_args__ = (Index("ix_remote_sessions_device_state", "device_id", "state"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "ses_" + random
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id", ondelete="CASCADE"))
    incident_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("incidents.id", ondelete="SET NULL"), index=True
    )
    owner: Mapped[str] = mapped_column(String(128))  # user name
    reason: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(24), default=SessionState.REQUESTED.value)
    requires_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    all_commands_need_consent: Mapped[bool] = mapped_column(Boolean, default=False)  # attended mode
    time_limit_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    consent_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    consent_command_id: Mapped[str | None] = mapped_column(String(64))
    consent_by: Mapped[str | None] = mapped_column(String(256))  # the local operator
    consent_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # activated_at + time limit
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended_by: Mapped[str | None] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(Text, default="")  # the technician's summary on close
    fixed: Mapped[bool | None] = mapped_column(Boolean)  # did the session fix the fault
    report: Mapped[dict[str, Any] | None] = mapped_column(Json)  # frozen when the session ends


class SessionEntry(Base):
    """A session's timeline: state changes, consent, commands and their results — append-only."""

    __tablename__ = "session_timeline"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("remote_sessions.id", ondelete="CASCADE"), index=True
    )
    ts: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(64))  # e.g. requested, consent.granted, command.sent
    actor: Mapped[str] = mapped_column(String(256))
    detail: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class Guide(Base):
    """Guided self-resolution steps for a fault code, authored or drawn from past incidents.
    ``steps``: ``[{"text": str, "action": str | None}]`` in order. Only ``customer_safe`` guides
    are offered to customers."""

    __tablename__ = "guides"
    __table_args__ = (Index("ix_guides_code_model", "fault_code", "model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fault_code: Mapped[str] = mapped_column(String(256))
    model: Mapped[str | None] = mapped_column(String(256))  # None: any model
    title: Mapped[str] = mapped_column(String(256))
    steps: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    customer_safe: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(64), default="authored")  # authored | incident:<id>
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    success_count: Mapped[int] = mapped_column(Integer, default=0)
    use_count: Mapped[int] = mapped_column(Integer, default=0)


class GuideRun(Base):
    """One customer working through one guide for one incident."""

    __tablename__ = "guide_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    guide_id: Mapped[int] = mapped_column(Integer, ForeignKey("guides.id", ondelete="CASCADE"))
    user: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    steps_done: Mapped[list[dict[str, Any]]] = mapped_column(
        Json, default=list
    )  # [{"step", "ts", "result", "note"}]
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | fixed | gave_up
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DeviceAssignmentPeriod(Base):
    """Which customer and site a device belonged to over [valid_from, valid_to) (None: still).

    Written by server/services/customers.py whenever a device is assigned or moved (and on
    first-contact site matching); the KPIs count each interval and incident to the customer and
    site *at the time*. A device without any row belongs to its current customer/site throughout;
    the first change recorded also writes the values before it, from the epoch (1970) on.
    """

    __tablename__ = "device_assignments"
    __table_args__ = (Index("ix_device_assignments_device_from", "device_id", "valid_from_s"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id", ondelete="CASCADE"))
    customer_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("customers.id", ondelete="SET NULL"))
    site_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("sites.id", ondelete="SET NULL"))
    valid_from: Mapped[datetime] = mapped_column(UtcDateTime)
    valid_to: Mapped[datetime | None] = mapped_column(UtcDateTime)
    valid_from_s: Mapped[float] = mapped_column(Float)
    valid_to_s: Mapped[float | None] = mapped_column(Float)

    @validates("valid_from", "valid_to")
    def _keep_epoch(self, key: str, value: datetime | None) -> datetime | None:
        setattr(self, f"{key}_s", epoch(value))
        return value


class KpiStateSegment(Base):
    """One piece of a device's state timeline as the KPIs see it (migration 0008): from
    ``start_s`` to the next segment's start (the last one: for ever) the instant belongs to
    precedence level ``lvl`` (1 unplanned down, 2 external down, 3 planned maintenance,
    4 running/degraded, 5 unknown), and ``c1``…``c4`` are the device's seconds at level ≤ k
    before ``start_s`` — prefix sums, so any period's state time is two lookups.
    Derived data: server/kpi/rollups.py rebuilds it from state_intervals."""

    __tablename__ = "kpi_state_segments"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    start_s: Mapped[float] = mapped_column(Float, primary_key=True)
    lvl: Mapped[int] = mapped_column(Integer)
    c1: Mapped[float] = mapped_column(Float)
    c2: Mapped[float] = mapped_column(Float)
    c3: Mapped[float] = mapped_column(Float)
    c4: Mapped[float] = mapped_column(Float)


class KpiContractMonth(Base):
    """A device's state time inside its customer's contract hours in one whole UTC month
    (migration 0012): seconds at level ≤ k (``u1``…``u4``, the levels of
    :class:`KpiStateSegment`), for a month the device spent with one customer (``customer_id``)
    whose contract hours were ``hours_key`` (their canonical JSON) when it was built. A report
    uses the row only when the device's rollup is clean, its customer at the time is the same
    and the contract hours unchanged; everything else is read from the segments. Derived data:
    server/kpi/rollups.py rebuilds it with the segments."""

    __tablename__ = "kpi_contract_months"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    month_s: Mapped[float] = mapped_column(Float, primary_key=True)
    month_e: Mapped[float] = mapped_column(Float)
    customer_id: Mapped[int] = mapped_column(Integer)
    hours_key: Mapped[str] = mapped_column(String(512))
    u1: Mapped[float] = mapped_column(Float)
    u2: Mapped[float] = mapped_column(Float)
    u3: Mapped[float] = mapped_column(Float)
    u4: Mapped[float] = mapped_column(Float)


class KpiRollupDirty(Base):
    """A device whose state intervals changed at or after ``since_s`` since its segments were
    built; written by database triggers on state_intervals (migration 0008), so every write
    path is caught. Reports read such a device raw until its rollup is refreshed."""

    __tablename__ = "kpi_rollup_dirty"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    since_s: Mapped[float] = mapped_column(Float)


# --- knowledge base (migration 0009, docs/knowledge.md) ---------------------------------------


class ArticleState(StrEnum):
    """``draft → published → retired``. Only published articles are suggested or shown to
    customers; a retired one is kept for the incidents that link it."""

    DRAFT = "draft"
    PUBLISHED = "published"
    RETIRED = "retired"


class ArticleType(StrEnum):
    PROBLEM = "problem"  # a fault and its fix
    HOW_TO = "how-to"  # how to do something with the equipment
    DIAGNOSTIC = "diagnostic"  # how to find out what is wrong


class Article(Base):
    """A KCS article: the symptom in the customer's words, the environment it applies to, the
    cause and the resolution (text steps, and remote actions with their arguments), with the
    counters the suggestions weigh (``success_count`` of ``use_count`` incidents it was used on)."""

    __tablename__ = "kb_articles"
    __table_args__ = (Index("ix_kb_articles_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(256))
    type: Mapped[str] = mapped_column(String(16), default=ArticleType.PROBLEM.value)
    state: Mapped[str] = mapped_column(String(16), default=ArticleState.DRAFT.value)
    symptom: Mapped[str] = mapped_column(Text, default="")
    cause: Mapped[str] = mapped_column(Text, default="")
    resolution: Mapped[str] = mapped_column(Text, default="")
    actions: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)  # [{"action", "args"}]
    models: Mapped[list[str]] = mapped_column(Json, default=list)  # empty: any model
    fault_codes: Mapped[list[str]] = mapped_column(Json, default=list)
    firmware_min: Mapped[str | None] = mapped_column(String(64))
    firmware_max: Mapped[str | None] = mapped_column(String(64))
    signature: Mapped[dict[str, float]] = mapped_column(Json, default=dict)  # metric -> mean z-score
    customer_safe: Mapped[bool] = mapped_column(Boolean, default=False)
    use_count: Mapped[int] = mapped_column(Integer, default=0)  # incidents linked (drafted or reused)
    reuse_count: Mapped[int] = mapped_column(Integer, default=0)  # links to it after it existed
    success_count: Mapped[int] = mapped_column(Integer, default=0)  # links where it fixed the fault
    apply_count: Mapped[int] = mapped_column(Integer, default=0)  # remote actions sent from a suggestion
    source_incident_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("incidents.id", ondelete="SET NULL")
    )
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)  # any change: the index
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ArticleLink(Base):
    """An incident resolved with an article: ``drafted`` (the article was written from it) or
    ``linked`` (an existing article reused); ``fixed``: the article's fix worked (a reopen of the
    incident turns it false). ``signature``: the incident's abnormal metrics at the fault."""

    __tablename__ = "kb_article_links"
    __table_args__ = (UniqueConstraint("article_id", "incident_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("kb_articles.id", ondelete="CASCADE"), index=True
    )
    incident_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # drafted | linked
    fixed: Mapped[bool] = mapped_column(Boolean, default=True)
    signature: Mapped[dict[str, float]] = mapped_column(Json, default=dict)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SuggestionShown(Base):
    """An article served as a suggestion for an incident (migration 0010): one row per incident
    and article, upserted on every ``GET /incidents/{id}/suggestions`` while the incident is
    unresolved — ``best_rank`` the best (lowest, 1-based) position it was shown at, and
    ``first_shown_at`` when it was first shown. Read by the KPI ``kb_suggestion_hit5``."""

    __tablename__ = "kb_suggestions_shown"
    __table_args__ = (UniqueConstraint("incident_id", "article_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(Integer, ForeignKey("incidents.id", ondelete="CASCADE"))
    article_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("kb_articles.id", ondelete="CASCADE"), index=True
    )
    best_rank: Mapped[int] = mapped_column(Integer)
    first_shown_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


# --- KPI incident rollups (migration 0011, docs/kpis.md "Rollups") ----------------------------


class _IncidentRollupColumns:
    """The measures of :class:`KpiIncidentMonth` and :class:`KpiIncidentYear`."""

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lo_s: Mapped[float] = mapped_column(Float)
    hi_s: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    ch_auto: Mapped[int] = mapped_column(Integer)
    ch_customer: Mapped[int] = mapped_column(Integer)
    ch_remote: Mapped[int] = mapped_column(Integer)
    ch_field: Mapped[int] = mapped_column(Integer)
    avoided: Mapped[int] = mapped_column(Integer)
    ftf: Mapped[int] = mapped_column(Integer)
    n_mtrs: Mapped[int] = mapped_column(Integer)
    n_mtta: Mapped[int] = mapped_column(Integer)
    n_mttrespond: Mapped[int] = mapped_column(Integer)
    t_mtrs: Mapped[float] = mapped_column(Float)
    t_mtta: Mapped[float] = mapped_column(Float)
    t_mttrespond: Mapped[float] = mapped_column(Float)
    t_mttresolve: Mapped[float] = mapped_column(Float)
    v_mtrs: Mapped[bytes] = mapped_column()
    v_mtta: Mapped[bytes] = mapped_column()
    v_mttrespond: Mapped[bytes] = mapped_column()
    v_mttresolve: Mapped[bytes] = mapped_column()
    v_avoided: Mapped[bytes] = mapped_column()  # restore time of each dispatch avoided
    # by the month of another time (migration 0012): detected, failed (clamped t_fault), raised
    opened: Mapped[int] = mapped_column(Integer, server_default="0")
    remote: Mapped[int] = mapped_column(Integer, server_default="0")
    failures: Mapped[int] = mapped_column(Integer, server_default="0")
    repeats: Mapped[int] = mapped_column(Integer, server_default="0")
    episodes: Mapped[int] = mapped_column(Integer, server_default="0")
    transients: Mapped[int] = mapped_column(Integer, server_default="0")


class KpiIncidentMonth(_IncidentRollupColumns, Base):
    """What a report needs of one device's incidents in one UTC month (``month_s``): of those
    resolved in it, counts and sums of the ``resolved`` step and each duration population as
    float64 bytes (``array('d')``), so exact percentiles merge months without reading
    incidents; of those detected / failing in it, the counts of the ``counts`` and ``episodes``
    steps; its transient faults. ``lo_s``/``hi_s`` bound the clamped t_fault (raised time) of
    all of them: a report uses the row only when both fall in one customer/site period of the
    device. Built by :mod:`server.kpi.incident_rollups`."""

    __tablename__ = "kpi_incident_months"
    __table_args__ = (Index("ix_kpi_incident_months_month", "month_s"),)

    month_s: Mapped[float] = mapped_column(Float, primary_key=True)


class KpiIncidentYear(_IncidentRollupColumns, Base):
    """The twelve :class:`KpiIncidentMonth` rows of one device and UTC year (``year_s``) in
    one (migration 0012): a report over whole calendar years reads one row per device and
    year where the device had one customer/site period throughout."""

    __tablename__ = "kpi_incident_years"

    year_s: Mapped[float] = mapped_column(Float, primary_key=True)


class KpiEpisodeStart(Base):
    """A failure that begins a failure episode (it starts at or after every earlier failure of
    its device ended), so a report reading a few incidents raw need not read the device's
    history before them (migration 0012). Built with the incident rollups; a report trusts it
    only for devices that are not dirty."""

    __tablename__ = "kpi_episode_starts"

    incident_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)


class KpiIncidentDirty(Base):
    """A device whose incidents changed since its :class:`KpiIncidentMonth` rows were built;
    written by triggers on incidents (migration 0011). Reports read such a device raw."""

    __tablename__ = "kpi_incident_dirty"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
