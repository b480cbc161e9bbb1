"""Migrations on SQLite and PostgreSQL: they apply, re-apply as a no-op, and match the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import inspect, select
from sqlalchemy.exc import StatementError

from server.db.migrate import run_migrations
from server.db.models import Base, Device
from server.settings import sync_database_url
from tests.support.databases import BACKENDS, PostgresUnavailable, sqlite_url, temporary_postgres_database


@pytest.fixture(params=BACKENDS)
def empty_db(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "sub" / "dir" / "fleetcare.db")  # parent folders are created
        return
    try:
        with temporary_postgres_database("fc_mig") as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


def test_migrations_create_every_table_and_match_the_models(empty_db: str) -> None:
    run_migrations(empty_db)
    run_migrations(empty_db)  # idempotent: already at head
    engine = create_sync_engine(sync_database_url(empty_db))
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        assert "alembic_version" in tables
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == []
    finally:
        engine.dispose()


async def test_timestamps_come_back_timezone_aware_utc(sessions) -> None:  # type: ignore[no-untyped-def]
    cest = timezone(timedelta(hours=2))
    async with sessions() as session:
        session.add(Device(id="tz-1", first_seen=datetime(2026, 5, 1, 14, 0, 0, 123456, tzinfo=cest)))
        await session.commit()
    async with sessions() as session:
        first_seen = await session.scalar(select(Device.first_seen).where(Device.id == "tz-1"))
    assert first_seen == datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert first_seen.tzinfo is UTC


async def test_naive_datetimes_are_refused(sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        session.add(Device(id="tz-2", first_seen=datetime(2026, 5, 1, 12, 0)))
        with pytest.raises(StatementError, match="naive datetime"):
            await session.commit()
