"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

__all__ = ["insert_ignore"]


def insert_ignore(session: AsyncSession, entity: type[DeclarativeBase] | Table) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for the session's backend (SQLite ≥ 3.35 and
    PostgreSQL both support it, with RETURNING reporting only the rows actually inserted)."""
    name = session.get_bind().dialect.name
    if name == "sqlite":
        return sqlite.insert(entity).on_conflict_do_nothing()
    if name == "postgresql":
        return postgresql.insert(entity).on_conflict_do_nothing()
    raise NotImplementedError(f"database backend {name!r} is not supported")
