"""What every ``fleetcare server`` command shares: the Typer app, the settings option, one-line
errors with exit status 2, and running database work in one session or many."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.errors import ServerError
from server.settings import ServerSettings, load_settings

__all__ = [
    "CLI_ACTOR",
    "ConfigOption",
    "ExpiresOption",
    "app",
    "fail",
    "load",
    "setup_logging",
    "with_session",
    "with_sessions",
]

T = TypeVar("T")
CLI_ACTOR = "cli"

app = typer.Typer(
    help="Run and administer the fleet server.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file (environment FLEETCARE_* overrides it)."),
]
ExpiresOption = Annotated[
    float | None, typer.Option("--expires-days", min=0.0, help="Token lifetime in days (default: no expiry).")
]


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def load(config: Path | None, *, connects: bool = False) -> ServerSettings:
    """The settings; the broker's certificate files are required only by a command that
    ``connects`` to it (``server run``): administering users or customers needs the database only."""
    try:
        return load_settings(config, connects=connects)
    except ServerError as exc:
        raise fail(str(exc)) from exc


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def with_session(
    settings: ServerSettings, work: Callable[[AsyncSession], Awaitable[T]], *, create: bool = True
) -> T:
    """Migrate, open a session, run ``work``; errors become one line and exit status 2.
    ``create=False`` (commands that read): the database must exist already, migrated."""

    async def in_session(sessions: async_sessionmaker[AsyncSession]) -> T:
        async with sessions() as session:
            return await work(session)

    return with_sessions(settings, in_session, create=create)


def with_sessions(
    settings: ServerSettings,
    work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]],
    *,
    create: bool = True,
) -> T:
    """Migrate, hand ``work`` a session factory (for work done in many transactions); errors
    become one line and exit status 2.

    ``create=False`` is for commands that read what is there (lists, the audit check): they
    neither create a database file nor migrate one, and a missing or unmigrated database is a
    one-line error naming where the database comes from, not an SQL error about a table."""
    from server.db import create_engine, create_sessionmaker, run_migrations  # noqa: PLC0415 - lazy
    from server.db.existing import require_database  # noqa: PLC0415

    async def main() -> T:
        if create:
            await asyncio.to_thread(run_migrations, settings.database_url)
        else:
            await asyncio.to_thread(require_database, settings.database_url)
        engine = create_engine(settings.database_url)
        try:
            return await work(create_sessionmaker(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ServerError as exc:
        raise fail(str(exc)) from exc
    except (SQLAlchemyError, OSError) as exc:
        raise fail(f"database: {exc}") from exc
