"""Database fixtures for the server tests: every DB test runs on SQLite and on PostgreSQL.

``db_url`` (tests/conftest.py) is an empty, migrated database on each backend; ``sessions``
is a session factory on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db import create_engine, create_sessionmaker


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(db_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()
