"""``fleetcare server``: Running the server and its database migrations."""

from __future__ import annotations

import typer
from sqlalchemy.exc import SQLAlchemyError

from server.cli.common import (
    ConfigOption,
    app,
    fail,
    load,
    setup_logging,
)
from server.errors import ServerError


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the server: API, ingest and command sweeper, until SIGINT/SIGTERM."""
    import uvicorn  # noqa: PLC0415 - only this command needs it

    from server.app import create_app, load_signer  # noqa: PLC0415
    from server.db import run_migrations  # noqa: PLC0415

    settings = load(config, connects=True)
    setup_logging(settings.log_level)
    try:
        load_signer(settings.signing_key_file)  # refuse a bad key before anything starts
        run_migrations(settings.database_url)
    except ServerError as exc:
        raise fail(str(exc)) from exc
    except (SQLAlchemyError, OSError) as exc:
        raise fail(f"database: {exc}") from exc
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

    settings = load(config)
    setup_logging(settings.log_level)
    try:
        run_migrations(settings.database_url)
    except (SQLAlchemyError, OSError) as exc:
        raise fail(f"database: {exc}") from exc
    typer.echo("database is up to date", err=True)
