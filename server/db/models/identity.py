"""Who acts: users and their roles, technicians' customers, API tokens, and the audit log of what they did."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models.base import Base
from server.db.types import BigId, Json, UtcDateTime, utcnow

__all__ = ["ApiToken", "AuditEntry", "Role", "TechnicianAssignment", "User"]


class Role(StrEnum):
    ADMIN = "admin"
    TECHNICIAN = "technician"  # sessions and commands on the customers assigned to them
    OPS = "ops"  # reads fleet, incidents and KPIs
    CUSTOMER = "customer"  # reads their own devices, incidents, KPIs; works guided steps
    PROVISIONING = "provisioning"


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
    ``hash`` unset; the sealer (server/base/audit.py) then numbers them 1, 2, 3 … and sets
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
