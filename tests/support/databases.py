"""Throwaway databases for tests: a SQLite file or a fresh PostgreSQL database.

    with temporary_postgres_database() as url:      # postgresql+psycopg://…/fc_test_<random>
        ...                                          # dropped on exit

Tests usually take the ``db_url`` fixture (tests/conftest.py) instead: an empty, migrated
database, parametrised over :data:`BACKENDS`.

The PostgreSQL server is the one at ``FLEETCARE_TEST_PG_URL`` (any database on it that the
user may connect to, e.g. ``postgresql://postgres@127.0.0.1:5432/test``); by default
127.0.0.1:5432/test as user ``postgres``, then as the current user. :class:`PostgresUnavailable`
says why none could be reached, for a clear ``pytest.skip``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL, make_url

__all__ = [
    "BACKENDS",
    "PG_URL_ENV",
    "PostgresUnavailable",
    "postgres_admin_url",
    "sqlite_url",
    "temporary_postgres_database",
]

PG_URL_ENV = "FLEETCARE_TEST_PG_URL"

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""Parameters of a fixture that runs a test on each backend: ids ``[sqlite]`` and ``[postgres]``."""


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be reached; the message says what was tried."""


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _candidates() -> list[URL]:
    configured = os.environ.get(PG_URL_ENV)
    if configured:
        return [make_url(configured)]
    base = URL.create("postgresql", host="127.0.0.1", port=5432, database="test")
    users = ["postgres", getpass.getuser()]
    return [base.set(username=user) for user in dict.fromkeys(users)]


def _conninfo(url: URL, database: str | None = None) -> str:
    return url.set(drivername="postgresql", database=database or url.database).render_as_string(
        hide_password=False
    )


def postgres_admin_url() -> URL:
    """The first candidate server URL that accepts a connection."""
    problems = []
    for url in _candidates():
        try:
            with psycopg.connect(_conninfo(url), connect_timeout=3):
                return url
        except psycopg.Error as exc:
            problems.append(f"{url.render_as_string(hide_password=True)}: {str(exc).strip().splitlines()[0]}")
    raise PostgresUnavailable("PostgreSQL not reachable (" + "; ".join(problems) + f"); set {PG_URL_ENV}")


@contextlib.contextmanager
def temporary_postgres_database(prefix: str = "fc_test") -> Iterator[str]:
    """Create ``<prefix>_<random>``, yield its async SQLAlchemy URL, drop it afterwards."""
    admin = postgres_admin_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(admin), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_conninfo(admin), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
