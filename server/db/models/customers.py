"""Customers, their sites, and which customer and site a device belonged to when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, validates

from server.db.models.base import Base, epoch
from server.db.types import BigId, Json, UtcDateTime, utcnow

__all__ = ["Customer", "DeviceAssignmentPeriod", "Site"]


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


class DeviceAssignmentPeriod(Base):
    """Which customer and site a device belonged to over [valid_from, valid_to) (None: still).

    Written by server/customers/service.py whenever a device is assigned or moved (and on
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
