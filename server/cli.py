"""``fleetcare server``: run the fleet server and administer users and tokens."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Role
from server.errors import ServerError
from server.settings import ServerSettings, load_settings

__all__ = ["app"]

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


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _settings(config: Path | None) -> ServerSettings:
    try:
        return load_settings(config)
    except ServerError as exc:
        raise _fail(str(exc)) from exc


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _with_session(settings: ServerSettings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Migrate, open a session, run ``work``; errors become one line and exit status 2."""
    from server.db import create_engine, create_sessionmaker, run_migrations  # noqa: PLC0415 - lazy

    async def main() -> T:
        await asyncio.to_thread(run_migrations, settings.database_url)
        engine = create_engine(settings.database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ServerError as exc:
        raise _fail(str(exc)) from exc
    except (SQLAlchemyError, OSError) as exc:
        raise _fail(f"database: {exc}") from exc


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the server: API, ingest and command sweeper, until SIGINT/SIGTERM."""
    import uvicorn  # noqa: PLC0415 - only this command needs it

    from server.app import create_app, load_signer  # noqa: PLC0415
    from server.db import run_migrations  # noqa: PLC0415

    settings = _settings(config)
    _setup_logging(settings.log_level)
    try:
        load_signer(settings.signing_key_file)  # refuse a bad key before anything starts
        run_migrations(settings.database_url)
    except ServerError as exc:
        raise _fail(str(exc)) from exc
    except (SQLAlchemyError, OSError) as exc:
        raise _fail(f"database: {exc}") from exc
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, migrate=False),
            host=settings.api.host,
            port=settings.api.port,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    )
    server.run()
    if not server.started:
        raise typer.Exit(1)


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Apply the database migrations (the server also does this at start-up)."""
    from server.db import run_migrations  # noqa: PLC0415

    settings = _settings(config)
    _setup_logging(settings.log_level)
    try:
        run_migrations(settings.database_url)
    except (SQLAlchemyError, OSError) as exc:
        raise _fail(f"database: {exc}") from exc
    typer.echo("database is up to date", err=True)


def _ttl(days: float | None) -> timedelta | None:
    return timedelta(days=days) if days else None


@app.command("create-user")
def create_user(
    name: Annotated[str, typer.Argument(help="User name (A-Z a-z 0-9 . _ @ -).")],
    role: Annotated[
        Role, typer.Option("--role", help="admin, technician, ops or provisioning.")
    ] = Role.TECHNICIAN,
    expires_days: ExpiresOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a user and print a first API token (shown once) to stdout."""
    from server.services import users  # noqa: PLC0415

    async def work(session: AsyncSession) -> str:
        await users.create_user(session, name, role, actor=CLI_ACTOR)
        issued = await users.issue_token(session, name, actor=CLI_ACTOR, ttl=_ttl(expires_days))
        return issued.token

    token = _with_session(_settings(config), work)
    typer.echo(f"created user {name!r} ({role.value}); API token (shown once):", err=True)
    typer.echo(token)


@app.command()
def token(
    name: Annotated[str, typer.Argument(help="User name.")],
    expires_days: ExpiresOption = None,
    config: ConfigOption = None,
) -> None:
    """Issue a new API token for an existing user and print it (shown once) to stdout."""
    from server.services import users  # noqa: PLC0415

    async def work(session: AsyncSession) -> str:
        return (await users.issue_token(session, name, actor=CLI_ACTOR, ttl=_ttl(expires_days))).token

    typer.echo(_with_session(_settings(config), work))


@app.command("revoke-token")
def revoke_token(
    token: Annotated[str | None, typer.Argument(help="The token to revoke.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Revoke every token of this user.")] = None,
    config: ConfigOption = None,
) -> None:
    """Revoke one token, or every token of a user (--user)."""
    from server.services import users  # noqa: PLC0415

    if (token is None) == (user is None):
        raise _fail("give either a TOKEN or --user NAME")

    async def work(session: AsyncSession) -> str:
        if user is not None:
            count = await users.revoke_user_tokens(session, user, actor=CLI_ACTOR)
            return f"revoked {count} token(s) of {user!r}"
        assert token is not None
        token_id = await users.revoke_token(session, token, actor=CLI_ACTOR)
        return f"revoked token {token_id}"

    typer.echo(_with_session(_settings(config), work), err=True)


if __name__ == "__main__":
    app()
