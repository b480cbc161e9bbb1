"""Preventive maintenance: threshold rules, their alerts and evaluation state."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models.base import Base
from server.db.types import BigId, UtcDateTime, utcnow

__all__ = ["Rule", "RuleAlert", "RuleState"]


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
