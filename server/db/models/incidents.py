"""Equipment states and incidents derived from the device history, with the trackers that derive them."""

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
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, validates

from server.db.models.base import Base, epoch
from server.db.types import BigId, Json, UtcDateTime, utcnow

__all__ = [
    "Channel",
    "DeviceState",
    "Incident",
    "IncidentEntry",
    "IncidentEpisode",
    "IncidentKind",
    "IncidentStatus",
    "StateInterval",
    "StateTracker",
    "TransientFault",
]


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
    # migration 0014: the earlier incident whose fault this one repeats — the same fault came back
    # later than incidents.reopen_window_hours after that one's restore (docs/incidents.md)
    repeat_of: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("incidents.id", ondelete="SET NULL"), index=True
    )
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


class IncidentEpisode(Base):
    """One failure episode of an incident (migration 0014): a row per span of
    ``Incident.episodes``, written with them (server/incidents/sync.py), so the KPIs find the
    episodes restored in a period through an index (MTRS per episode, docs/kpis.md)."""

    __tablename__ = "incident_episodes"
    __table_args__ = (Index("ix_incident_episodes_restored", "restored_s"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[str] = mapped_column(String(64))  # the incident's (the rollups' dirty triggers)
    seq: Mapped[int] = mapped_column(Integer)  # its place in Incident.episodes, from 0
    fault_s: Mapped[float] = mapped_column(Float)  # the span's start_s (device time, skew-corrected)
    detect_s: Mapped[float] = mapped_column(Float)
    restored_s: Mapped[float | None] = mapped_column(Float)  # its end_s; None while it lasts


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
