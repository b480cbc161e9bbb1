"""The declarative base with the constraint naming convention, and shared column helpers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    MetaData,
)
from sqlalchemy.orm import DeclarativeBase

__all__ = ["NAMING", "Base", "epoch"]


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def epoch(value: datetime | None) -> float | None:
    """Seconds since 1970 (UTC). Incidents and state intervals keep these next to their
    timestamps so KPI queries do interval arithmetic in SQL identically on both backends."""
    return None if value is None else value.timestamp()
