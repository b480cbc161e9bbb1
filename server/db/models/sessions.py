"""Remote sessions with their timeline, and guided self-resolution."""

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
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models.base import Base
from server.db.types import BigId, Json, UtcDateTime, utcnow

__all__ = ["Guide", "GuideRun", "RemoteSession", "SessionEntry", "SessionState"]


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
