"""Database: tables, engine and sessions, migrations."""

from server.db.engine import create_engine, create_sessionmaker, is_sqlite
from server.db.migrate import run_migrations

__all__ = ["create_engine", "create_sessionmaker", "is_sqlite", "run_migrations"]
