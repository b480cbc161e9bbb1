"""Every store of the agent in its one database (agent/storage.py): the outbox, the replay
cache, consent decisions and the command inbox, each with its own tables.

Its own module so that the database opener takes the schemas it is given and knows no store,
while each store builds on the opener: no import circle between them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent import consent, inbox, outbox, replay
from agent.storage import JournalMode, SyncMode, open_database

__all__ = ["SCHEMAS", "open_agent_database"]

SCHEMAS = (outbox.SCHEMA, replay.SCHEMA, consent.SCHEMA, inbox.SCHEMA)


def open_agent_database(
    data_dir: Path, *, journal: JournalMode = "wal", sync: SyncMode = "normal"
) -> sqlite3.Connection:
    """``data_dir/agent.sqlite3`` with every store's tables (see :func:`agent.storage.open_database`)."""
    return open_database(data_dir, SCHEMAS, journal=journal, sync=sync)
