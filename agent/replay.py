"""Persistent replay cache: command ids remembered until they expire, across restarts.

Implements :class:`protocol.ReplayCache`. An id is stored *before* its command runs, so a
command is executed at most once even if the agent dies half-way and the broker redelivers
it. Entries are pruned once ``expires_at`` is further in the past than the clock skew
allowance: by then the verifier rejects the command as expired anyway, so forgetting the id
opens no window. Synchronous for the same reasons as :mod:`agent.outbox` (one indexed
statement, and the guard must decide before anything else happens). The runtime passes the
shared connection of ``data_dir/agent.sqlite3`` (``db=``); given only a path it opens its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.errors import AgentError
from agent.storage import connect
from protocol.signing import DEFAULT_CLOCK_SKEW

__all__ = ["SqliteReplayCache"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (command_id TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS seen_expiry ON seen (expires_at);
"""


class SqliteReplayCache:
    def __init__(
        self,
        path: Path,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        skew: timedelta = DEFAULT_CLOCK_SKEW,
        db: sqlite3.Connection | None = None,
    ) -> None:
        self.path = path
        self._owns_db = db is None
        self._now = now
        self._skew = skew
        try:
            self._db = db if db is not None else connect(path)
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise AgentError(f"cannot open the replay cache {path}: {exc}") from exc

    def remember(
        self,
        command_id: str,
        expires_at: datetime,
        *,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> bool:
        """Record ``command_id``; False if it is already there (a replay).

        ``also`` runs in the same transaction when the id is new: the inbox marks its row
        accepted with it (agent/inbox.py), so no crash can leave the id recorded and the row
        not knowing it owns it."""
        horizon = (self._now() - self._skew).timestamp()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM seen WHERE expires_at < ?", (horizon,))
                inserted = self._db.execute(
                    "INSERT OR IGNORE INTO seen (command_id, expires_at) VALUES (?, ?)",
                    (command_id, expires_at.timestamp()),
                ).rowcount
                if inserted == 1 and also is not None:
                    also(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise AgentError(f"replay cache unusable: {exc}") from exc
        return inserted == 1

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM seen").fetchone()[0])

    def close(self) -> None:
        """Close the connection if the cache opened it (a shared one belongs to the runtime)."""
        if self._owns_db:
            self._db.close()
