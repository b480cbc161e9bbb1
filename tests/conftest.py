"""Fixtures shared by every test package. Keep this small and generic."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from certs import PkiDir, init_pki
from server.db import create_engine, run_migrations
from server.db.models import Base
from tests.support.broker import MosquittoBroker, find_mosquitto, issue_spare_server_identities
from tests.support.databases import BACKENDS, PostgresUnavailable, sqlite_url, temporary_postgres_database


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    """A fleet PKI (CA, broker, server identity, signing key, CRL) shared by the whole session.

    Tests that issue or revoke device certificates use unique device ids.
    """
    pki = init_pki(tmp_path_factory.mktemp("pki") / "pki")
    issue_spare_server_identities(pki)
    return pki


@pytest.fixture
def broker(pki: PkiDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A real Mosquitto with mutual TLS and the fleet ACL, on a free port, stopped afterwards."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not found (`make test` installs it; or apt-get install mosquitto)")
    with MosquittoBroker(pki, tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One throwaway PostgreSQL database for the session, migrated; dropped at the end.
    Skips (with the reason) when no PostgreSQL server is reachable."""
    try:
        with temporary_postgres_database("fc_test") as url:
            run_migrations(url)
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty, migrated database on each backend (ids ``[sqlite]``, ``[postgres]``): a fresh
    SQLite file per test, or the session's PostgreSQL database with its tables truncated."""
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
