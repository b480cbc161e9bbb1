"""Migrations on SQLite and PostgreSQL: they apply, re-apply as a no-op, and match the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import StatementError

from server.db.migrate import alembic_config, run_migrations
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


def test_migration_0014_downgrades_and_upgrades_again(empty_db: str) -> None:
    """Repeat failures and failure episodes (0014): its downgrade removes them (on SQLite the
    incidents table is copied: its KPI triggers must survive both ways), and it applies again,
    filling incident_episodes from incidents.episodes."""
    run_migrations(empty_db, "0013")
    engine = create_sync_engine(sync_database_url(empty_db))
    spans = '[{"start_s": 100.0, "detect_s": 160.0, "end_s": 400.0}, {"start_s": 900.0, "detect_s": 960.0, "end_s": null}]'
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO devices (id, first_seen, online) VALUES ('m-1', :t, false)"),
                {"t": datetime(2026, 1, 1, tzinfo=UTC)},
            )
            conn.execute(
                text(
                    "INSERT INTO incidents (device_id, kind, status, codes, severity, effect, priority, external,"
                    " t_fault, t_detect, fault_s, detect_s, symptom, cause, resolution, needs_dispatch,"
                    " remote_used, visits, reopened, episodes, auto_resolve)"
                    " VALUES ('m-1', 'fault', 'open', '[]', 'error', 'down', 3, false, :t, :t, 100, 160, '', '',"
                    " '', false, false, 0, 1, :spans, true)"
                ),
                {"t": datetime(2026, 1, 1, tzinfo=UTC), "spans": spans},
            )
            conn.execute(text("DELETE FROM kpi_incident_dirty"))
        run_migrations(empty_db)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT seq, fault_s, detect_s, restored_s FROM incident_episodes ORDER BY seq")
            ).all()
            assert [tuple(r) for r in rows] == [(0, 100.0, 160.0, 400.0), (1, 900.0, 960.0, None)]
            assert conn.execute(text("SELECT device_id FROM kpi_incident_dirty")).scalars().all() == ["m-1"]
            assert conn.execute(text("SELECT repeat_of FROM incidents")).scalars().all() == [None]
            for table in ("incidents", "incident_episodes"):  # their writes mark the device dirty
                conn.execute(text("DELETE FROM kpi_incident_dirty"))
                conn.execute(text(f"UPDATE {table} SET device_id = 'm-1'"))
                assert conn.execute(text("SELECT device_id FROM kpi_incident_dirty")).scalars().all() == [
                    "m-1"
                ]
            conn.rollback()
        command.downgrade(alembic_config(empty_db), "0013")
        with engine.connect() as conn:
            assert "incident_episodes" not in inspect(conn).get_table_names()
            assert "repeat_of" not in {c["name"] for c in inspect(conn).get_columns("incidents")}
            conn.execute(text("DELETE FROM kpi_incident_dirty"))
            conn.execute(text("UPDATE incidents SET priority = 2"))  # the 0011 trigger still marks it
            assert conn.execute(text("SELECT device_id FROM kpi_incident_dirty")).scalars().all() == ["m-1"]
            conn.rollback()
        run_migrations(empty_db)
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
            assert diff == []
            assert conn.execute(text("SELECT COUNT(*) FROM incident_episodes")).scalar() == 2
    finally:
        engine.dispose()
