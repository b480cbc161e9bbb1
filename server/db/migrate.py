"""Apply the Alembic migrations (synchronous; call it from a thread in async code)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from server.settings import sync_database_url

__all__ = ["MIGRATIONS_DIR", "alembic_config", "run_migrations"]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic config for ``url`` (async or sync form), without an ini file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", sync_database_url(url).replace("%", "%%"))
    return cfg


def run_migrations(url: str, revision: str = "head") -> None:
    parsed = make_url(sync_database_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    logger.info(
        "applying migrations to %s (target %s)", parsed.render_as_string(hide_password=True), revision
    )
    command.upgrade(alembic_config(url), revision)
