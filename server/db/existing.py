"""A database that must already be there: for commands that read (reports, lists, the audit
check), which must never create an empty database file as a side effect and then fail on its
missing tables with a raw SQL error, nor migrate someone's database behind their back.

:func:`require_database` checks, without creating anything, that the database exists and
carries the schema at the migrations' head, and says in one line what to do otherwise.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from server.db.migrate import alembic_config
from server.errors import ServerError
from server.settings import sync_database_url

__all__ = ["DATABASE_HINT", "NoDatabase", "require_database"]

DATABASE_HINT = "give --config server.toml (database_url) or set FLEETCARE_DATABASE_URL"
"""Where a command's database comes from; a command with its own option adds it in front."""


class NoDatabase(ServerError):
    """The database a read-only command was pointed at is missing, unreachable or not migrated."""

    code = "no_database"


def _revision(url: str) -> str | None:
    """The schema revision stored in the database, None when it has no fleetcare tables."""
    engine = sa.create_engine(sync_database_url(url))
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def require_database(url: str, *, hint: str = DATABASE_HINT) -> None:
    """Raise :class:`NoDatabase` unless ``url`` names an existing, migrated fleetcare database.

    ``hint`` tells the user which option or variable chooses the database. A SQLite file that
    does not exist is refused before anything opens it (opening would create it)."""
    try:
        parsed = make_url(sync_database_url(url))
    except (ValueError, ArgumentError) as exc:
        raise NoDatabase(f"{url!r} is not a database URL: {hint}") from exc
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise NoDatabase(f"database {shown!r} is in memory, so it is empty: {hint}")
        if not Path(database).is_file():
            raise NoDatabase(f"no database at {database!r} (the file does not exist): {hint}")
    try:
        revision = _revision(url)
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise NoDatabase(f"cannot open the database {shown!r}: {reason} ({hint})") from exc
    if revision is None:
        raise NoDatabase(
            f"{shown!r} is not a fleetcare database (no fleetcare tables): {hint}, "
            "or create it with `fleetcare server migrate`"
        )
    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_current_head()
    if revision == head:
        return
    if revision not in {rev.revision for rev in script.walk_revisions()}:
        raise NoDatabase(
            f"the database {shown!r} is at schema revision {revision}, which this fleetcare does not "
            "know (a newer fleetcare or another program migrated it): use the fleetcare that did"
        )
    raise NoDatabase(
        f"the database {shown!r} is at schema revision {revision}, this version needs {head}: "
        "run `fleetcare server migrate` first"
    )
