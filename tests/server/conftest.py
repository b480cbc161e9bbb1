"""Database fixtures for the server tests: every DB test runs on SQLite and on PostgreSQL.

``db_url`` is an empty, migrated database: a fresh SQLite file per test, or the session's
throwaway PostgreSQL database (``tests.support.databases``) with its tables truncated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db import create_engine, create_sessionmaker, run_migrations
from server.db.models import Base
from tests.support.databases import PostgresUnavailable, sqlite_url, temporary_postgres_database

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One throwaway PostgreSQL database for the session, migrated; dropped at the end."""
    try:
        with temporary_postgres_database("fc_test") as url:
            run_migrations(url)
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty, migrated database on each backend."""
    if request.param == "sqlite":
        path = sqlite_url(tmp_path_factory.mktemp("db") / "fleetcare.db")
        run_migrations(path)
        return path
    url: str = request.getfixturevalue("pg_database")
    engine = create_engine(url)
    try:
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()
    return url


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(db_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()
