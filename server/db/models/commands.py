"""Signed commands and their replies, with the compare-and-set state machine's states."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models.base import Base
from server.db.types import BigId, Json, UtcDateTime

__all__ = ["TERMINAL_STATES", "Command", "CommandReply", "CommandState"]


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
