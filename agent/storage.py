"""The agent's one local database: ``data_dir/agent.sqlite3`` (outbox, replay cache, consent).

One file and one connection per agent, because a process running thousands of simulated agents
is bounded by its open-files limit: three databases in WAL mode cost nine descriptors per
agent, one database costs three (WAL: the file, ``-wal``, ``-shm``) or one (rollback journal).
:class:`~agent.outbox.Outbox`, :class:`~agent.replay.SqliteReplayCache` and
:class:`~agent.consent.ConsentStore` each keep their own tables and take the shared connection
(``db=``); the runtime owns and closes it.

Journal modes (setting ``storage_journal``):

- ``wal`` (default, real devices): readers never block the agent's writes, so ``fleetcare agent
  outbox|consent`` from another process cannot stall it. Holds three descriptors.
- ``rollback`` (simulated fleets): journal_mode=PERSIST; between transactions only the database
  file is open. A reader in another process makes a write wait (up to the 5 s busy timeout).
  PERSIST zeroes the journal's header at each commit instead of truncating the file (TRUNCATE)
  or deleting it: the same crash safety, about 45 µs less per message and ack on this machine.

``storage_sync = "off"`` skips fsync: in rollback mode every commit otherwise costs two fsyncs
(about half a millisecond on this kind of disk), thousands of commits a second in one simulated
fleet. A committed write still survives the process being killed; a power cut may corrupt the
database, which is acceptable only for throw-away simulator data.

Migration: agents before this file kept ``outbox.sqlite3``, ``replay.sqlite3`` and
``consent.sqlite3``. :func:`open_database` copies their rows in one transaction, records
that in ``storage_migrations`` (so a crash before the renames cannot copy twice), then renames
each old file (and any ``-wal``/``-shm``) to ``*.migrated``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from agent.errors import AgentError, DataDirInUse

__all__ = [
    "DATABASE_NAME",
    "LEGACY_DATABASES",
    "JournalMode",
    "StorageError",
    "SyncMode",
    "connect",
    "database_path",
    "lock_data_dir",
    "open_database",
]

logger = logging.getLogger(__name__)

DATABASE_NAME = "agent.sqlite3"

JournalMode = Literal["wal", "rollback"]
SyncMode = Literal["normal", "off"]

_JOURNAL_PRAGMA: dict[str, str] = {"wal": "WAL", "rollback": "PERSIST"}

LEGACY_DATABASES: dict[str, tuple[tuple[str, str], ...]] = {
    "outbox.sqlite3": (
        (
            "outbox",
            "INSERT OR IGNORE INTO main.outbox SELECT seq, kind, topic, payload, retain, created_at "
            "FROM legacy.outbox",
        ),
        (
            "counters",
            "INSERT INTO main.counters (name, value) SELECT name, value FROM legacy.counters WHERE true "
            "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        ),
        ("once_keys", "INSERT OR IGNORE INTO main.once_keys SELECT key, seq FROM legacy.once_keys"),
    ),
    "replay.sqlite3": (
        ("seen", "INSERT OR IGNORE INTO main.seen SELECT command_id, expires_at FROM legacy.seen"),
    ),
    "consent.sqlite3": (
        (
            "consent",
            "INSERT OR IGNORE INTO main.consent SELECT session_id, technician, reason, until, "
            "all_commands, issuer, command_id, requested_at, state, decision, decided_by, decided_at, "
            "expires_at, deny_reason, announced FROM legacy.consent",
        ),
    ),
}
"""Old file → (its table, the statement copying it into the new database). Counters keep the
larger value, so a seq never goes backwards even if the new file had already counted."""

_MIGRATIONS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS storage_migrations (name TEXT PRIMARY KEY, at REAL NOT NULL);"
)


class StorageError(AgentError):
    """The agent's database cannot be opened or its old files cannot be migrated."""


def database_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / DATABASE_NAME


def connect(
    path: Path,
    *,
    journal: JournalMode | None = "wal",
    sync: SyncMode = "normal",
    read_only: bool = False,
) -> sqlite3.Connection:
    """A connection in autocommit mode (callers issue BEGIN/COMMIT, one short transaction each).

    ``journal=None`` leaves the journal mode as the file has it: the CLI, in another process,
    must not switch the agent's database between WAL and rollback.
    """
    uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0)
    try:
        if not read_only and journal is not None:
            conn.execute(f"PRAGMA journal_mode={_JOURNAL_PRAGMA[journal]}")
        conn.execute(f"PRAGMA synchronous={sync.upper()}")
    except BaseException:
        conn.close()
        raise
    return conn


def open_database(
    data_dir: Path, schemas: Sequence[str], *, journal: JournalMode = "wal", sync: SyncMode = "normal"
) -> sqlite3.Connection:
    """Open ``data_dir/agent.sqlite3`` with the tables of ``schemas`` (each store's ``SCHEMA``:
    :func:`agent.stores.open_agent_database` passes them all), migrating any old per-store files.

    Call it holding the data-dir lock: the migration assumes no other agent writes meanwhile.
    """
    path = database_path(data_dir)
    try:
        db = connect(path, journal=journal, sync=sync)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open the agent database {path}: {exc}") from exc
    try:
        # One transaction: a fresh database otherwise commits once per CREATE (a journal write
        # each), which made opening the agent's storage most of a simulated fleet's start-up.
        db.executescript("\n".join(("BEGIN IMMEDIATE;", *schemas, _MIGRATIONS_SCHEMA, "COMMIT;")))
        _migrate_legacy(db, Path(data_dir))
    except sqlite3.Error as exc:
        db.close()
        raise StorageError(
            f"cannot prepare the agent database {path}: {exc} "
            "(check that the data directory and its files belong to the agent's user)"
        ) from exc
    except BaseException:
        db.close()
        raise
    return db


def _migrate_legacy(db: sqlite3.Connection, data_dir: Path) -> None:
    for name, copies in LEGACY_DATABASES.items():
        old = data_dir / name
        if not old.exists():
            continue
        done = db.execute("SELECT 1 FROM storage_migrations WHERE name = ?", (name,)).fetchone()
        if done is None:
            try:
                _copy_rows(db, old, name, copies)
            except sqlite3.Error as exc:
                raise StorageError(
                    f"cannot move the rows of {old} into {DATABASE_NAME}: {exc}; the agent does not "
                    "start without them: repair that file, or move the file aside to start without "
                    "its rows"
                ) from exc
        _retire(old)


def _copy_rows(db: sqlite3.Connection, old: Path, name: str, copies: tuple[tuple[str, str], ...]) -> None:
    """Copy the tables ``old`` has into the main database and record it, in one transaction."""
    db.execute("ATTACH DATABASE ? AS legacy", (f"file:{old}",))
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM legacy.sqlite_master WHERE type = 'table'")}
        db.execute("BEGIN IMMEDIATE")
        try:
            moved = 0
            for table, sql in copies:
                if table in tables:
                    moved += max(0, db.execute(sql).rowcount)
            db.execute("INSERT INTO storage_migrations (name, at) VALUES (?, julianday('now'))", (name,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        # Detaching closes the old file: SQLite checkpoints and removes its -wal and -shm.
        db.execute("DETACH DATABASE legacy")
    logger.info("migrated %d rows from %s into %s", moved, old, DATABASE_NAME)


def _retire(old: Path) -> None:
    """``x.sqlite3`` → ``x.sqlite3.migrated`` (``-wal``/``-shm`` follow, still paired with it)."""
    try:
        for suffix in ("-wal", "-shm"):
            side = old.with_name(old.name + suffix)
            if side.exists():
                side.rename(old.with_name(f"{old.name}.migrated{suffix}"))
        old.rename(old.with_name(f"{old.name}.migrated"))
    except OSError as exc:
        raise StorageError(
            f"copied {old} into {DATABASE_NAME} but cannot rename it to {old.name}.migrated: {exc}; "
            "fix the data directory's permissions (its rows are already safe in the new file)"
        ) from exc


def lock_data_dir(data_dir: Path) -> int:
    """flock on a separate ``agent.lock``, one descriptor more per agent, on purpose: an fcntl
    lock on the database would be released by SQLite's own lock calls on that file (POSIX locks
    are per process) and would not keep a second runtime of the same process out; Python's sqlite3
    does not hand out SQLite's descriptor to flock."""
    fd = os.open(data_dir / "agent.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise DataDirInUse(data_dir) from exc
    return fd
