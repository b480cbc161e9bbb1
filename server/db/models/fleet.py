"""Devices and what they send: messages (the idempotency key), telemetry, events, status history, quarantined messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models.base import Base
from server.db.types import BigId, Json, UtcDateTime, utcnow

__all__ = ["Device", "Event", "Message", "QuarantinedMessage", "StatusRecord", "TelemetrySample"]


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
