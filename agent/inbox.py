"""The command inbox: every received command is on disk before the broker hears "PUBACK".

Why: with automatic acknowledgements an agent killed between receiving a command and running it
lost the command for good: the broker had forgotten it (acknowledged), the agent never knew it.
Now (agent/link.py, ``manual_ack``) the link hands each command payload to :meth:`Inbox.keep`,
which commits it, and only then sends the PUBACK. Table ``inbox`` of ``data_dir/agent.sqlite3``,
on the agent's one connection (see :mod:`agent.storage`), one short transaction per change.

One row per delivery, with its state::

    received ──guard accepts──▶ accepted ──handler starts──▶ started ──terminal reply──▶ done
        └───────────────guard rejects (rejected reply)────────────────────────────────▶ done

- ``received → accepted`` is committed in the *same transaction* as the replay cache's record
  of the command id (:class:`InboxClaim`), so after a crash the inbox knows which row owns the
  id and its replay is not mistaken for a replay attack;
- ``started`` is committed right before the action's handler runs;
- ``done`` is committed in the same transaction as the terminal reply in the outbox
  (:meth:`Inbox.finisher`): there is no moment where the reply is queued and the row is not done.

At start-up (:meth:`Inbox.unfinished`) ``received`` and ``accepted`` rows go through the guard
again — an expired one is answered as expired — and run once; a ``started`` row is **not** run
again (its action may not be idempotent: it may have restarted a service, changed a setting)
and is answered ``error(reason="Interrupted")``. So: a command acknowledged to the broker is
answered exactly once; its action runs at most once, exactly once unless the agent died while
the action was running, and then the reply says so.

Redeliveries: the broker re-sends an unacknowledged command after a reconnect with the DUP
flag set (MQTT 3.1.1 §3.3.1.1: the flag is set by the broker itself, never copied from the
publisher). A redelivered payload whose bytes are already in the inbox (any state) is a no-op:
acknowledged, not queued. Rows are matched by the SHA-256 of the payload rather than by the
command id, which is untrusted until the guard verified the signature: a forged payload reusing
a real command's id cannot shadow it. The same bytes arriving *without* DUP are a new delivery
(a replay, or the server sending again) and go to the guard, which rejects and audits a replay
as before.

Bounded: ``done`` rows are deleted ``keep_done`` seconds after they finished (default one day,
so what came in lately can still be looked at in the database), on every :meth:`Inbox.keep`
and at start-up. Unfinished rows are bounded by the broker's in-flight window and by the guard,
which finishes junk at once.

Durability: with ``durable=True`` (the runtime's default, ``storage_sync = "normal"``) the
commit that precedes a PUBACK, and the one before a handler starts, run with
``PRAGMA synchronous=FULL``: on disk, not only in the page cache, so a power cut does not lose
an acknowledged command nor re-run a started one. ``storage_sync = "off"`` (simulated fleets)
skips that fsync like every other.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from agent.errors import InboxError
from agent.replay import SqliteReplayCache
from agent.storage import connect
from protocol import MAX_PAYLOAD_BYTES

__all__ = ["INTERRUPTED_REASON", "Inbox", "InboxClaim", "InboxEntry", "InboxState"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY,
    digest BLOB NOT NULL,
    payload BLOB NOT NULL,
    state TEXT NOT NULL,
    claimed_id TEXT,
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_digest ON inbox (digest);
CREATE INDEX IF NOT EXISTS inbox_state ON inbox (state, updated_at);
"""

INTERRUPTED_REASON = "Interrupted"
"""``error`` reply reason of a command whose action was running when the agent died."""

DEFAULT_KEEP_DONE = 24 * 3600.0


class InboxState(StrEnum):
    RECEIVED = "received"  # stored, not yet through the guard
    ACCEPTED = "accepted"  # the guard accepted it: its id is claimed in the replay cache
    STARTED = "started"  # its action's handler was started
    DONE = "done"  # its terminal reply is in the outbox


@dataclass(frozen=True, slots=True)
class InboxEntry:
    id: int
    payload: bytes
    state: InboxState
    claimed_id: str | None  # the verified command id, once the guard accepted it
    received_at: float


Statement = Callable[[sqlite3.Connection], None]
"""Work to run inside another store's transaction on the shared connection."""


class Inbox:
    """The persistent record of received commands. Single writer (the data-dir lock)."""

    def __init__(
        self,
        path: Path,
        *,
        now: Callable[[], float] = time.time,
        keep_done: float = DEFAULT_KEEP_DONE,
        durable: bool = True,
        db: sqlite3.Connection | None = None,
    ) -> None:
        self.path = path
        self.keep_done = keep_done
        self.durable = durable
        self._now = now
        self._owns_db = db is None
        try:
            self._db = db if db is not None else connect(path)
            # Its own tables, in one transaction (agent/stores.py creates them too, with the others';
            # an inbox on a connection opened otherwise needs them here).
            self._db.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")
            self._sync = int(self._db.execute("PRAGMA synchronous").fetchone()[0])
        except sqlite3.Error as exc:
            raise InboxError(f"cannot open the command inbox in {path}: {exc}") from exc

    # -- writing -----------------------------------------------------------------------------

    def keep(self, payload: bytes, *, redelivered: bool = False) -> InboxEntry | None:
        """Commit a received payload as ``received``; None if ``redelivered`` and these bytes are
        already here (nothing to do but acknowledge). Raises :class:`InboxError`: then the
        payload must not be acknowledged."""
        digest = hashlib.sha256(payload).digest()
        # A payload over the protocol limit is rejected by its size alone: keep only enough
        # bytes for the guard to see that, not what a broken publisher sent.
        stored = payload[: MAX_PAYLOAD_BYTES + 1]
        now = self._now()
        try:
            with self._durably():
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(
                        "DELETE FROM inbox WHERE state = 'done' AND updated_at < ?", (now - self.keep_done,)
                    )
                    if (
                        redelivered
                        and self._db.execute("SELECT 1 FROM inbox WHERE digest = ?", (digest,)).fetchone()
                    ):
                        self._db.execute("ROLLBACK")
                        return None
                    cursor = self._db.execute(
                        "INSERT INTO inbox (digest, payload, state, received_at, updated_at) "
                        "VALUES (?, ?, 'received', ?, ?)",
                        (digest, stored, now, now),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise InboxError(f"cannot store a received command in {self.path}: {exc}") from exc
        assert cursor.lastrowid is not None
        return InboxEntry(cursor.lastrowid, stored, InboxState.RECEIVED, None, now)

    def mark_started(self, entry_id: int) -> None:
        """The action's handler is about to run: after a crash it will not be run again."""
        try:
            with self._durably():
                self._db.execute(
                    "UPDATE inbox SET state = 'started', updated_at = ? WHERE id = ? AND state = 'accepted'",
                    (self._now(), entry_id),
                )
        except sqlite3.Error as exc:
            raise InboxError(f"cannot record that command #{entry_id} started: {exc}") from exc

    def finisher(self, entry_id: int) -> Statement:
        """Marks ``entry_id`` done inside the caller's transaction (the terminal reply's)."""
        now = self._now()

        def finish(db: sqlite3.Connection) -> None:
            db.execute("UPDATE inbox SET state = 'done', updated_at = ? WHERE id = ?", (now, entry_id))

        return finish

    def claimer(self, entry_id: int, command_id: str) -> Statement:
        """Marks ``entry_id`` accepted as the owner of ``command_id``, inside the caller's
        transaction (the replay cache's)."""
        now = self._now()

        def claim(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE inbox SET state = 'accepted', claimed_id = ?, updated_at = ? WHERE id = ?",
                (command_id, now, entry_id),
            )

        return claim

    def finish(self, entry_id: int) -> None:
        """Mark done with no reply (a payload too broken to say which command it was)."""
        try:
            self.finisher(entry_id)(self._db)
        except sqlite3.Error as exc:
            raise InboxError(f"cannot record that command #{entry_id} is finished: {exc}") from exc

    def claim(self, entry: InboxEntry, replay: SqliteReplayCache) -> InboxClaim:
        """The replay cache the guard checks ``entry`` against (see :class:`InboxClaim`)."""
        return InboxClaim(self, entry, replay)

    def prune(self) -> int:
        """Delete the rows done more than ``keep_done`` seconds ago; how many."""
        try:
            return self._db.execute(
                "DELETE FROM inbox WHERE state = 'done' AND updated_at < ?", (self._now() - self.keep_done,)
            ).rowcount
        except sqlite3.Error as exc:
            raise InboxError(f"cannot prune the command inbox: {exc}") from exc

    # -- reading -----------------------------------------------------------------------------

    def unfinished(self) -> list[InboxEntry]:
        """Every row not done, in arrival order: what a restart must finish."""
        rows = self._db.execute(
            "SELECT id, payload, state, claimed_id, received_at FROM inbox WHERE state != 'done' ORDER BY id"
        ).fetchall()
        return [InboxEntry(i, bytes(p), InboxState(s), c, r) for i, p, s, c, r in rows]

    def get(self, entry_id: int) -> InboxEntry | None:
        row = self._db.execute(
            "SELECT id, payload, state, claimed_id, received_at FROM inbox WHERE id = ?", (entry_id,)
        ).fetchone()
        return None if row is None else InboxEntry(row[0], bytes(row[1]), InboxState(row[2]), row[3], row[4])

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT state, count(*) FROM inbox GROUP BY state").fetchall())

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM inbox").fetchone()[0])

    def close(self) -> None:
        """Close the connection if the inbox opened it (a shared one belongs to the runtime)."""
        if self._owns_db:
            self._db.close()

    # -- internals ---------------------------------------------------------------------------

    def _durably(self) -> _Synchronous:
        return _Synchronous(self._db, full=self.durable and self._sync != 0, back=self._sync)


class _Synchronous:
    """``PRAGMA synchronous=FULL`` for one commit, then back to the connection's setting."""

    def __init__(self, db: sqlite3.Connection, *, full: bool, back: int) -> None:
        self._db = db
        self._full = full
        self._back = back

    def __enter__(self) -> None:
        if self._full:
            self._db.execute("PRAGMA synchronous=FULL")

    def __exit__(self, *exc: object) -> None:
        if self._full:
            self._db.execute(f"PRAGMA synchronous={self._back:d}")


class InboxClaim:
    """The :class:`protocol.ReplayCache` for one inbox row: the replay cache's record of the
    command id and the row's ``accepted`` state are committed together.

    After a restart, a row that had been accepted is checked again; the replay cache already
    holds its id, recorded *by this row*: that is not a replay, and :meth:`remember` says so.
    Any other row with that id (a real replay) still gets False.
    """

    def __init__(self, inbox: Inbox, entry: InboxEntry, replay: SqliteReplayCache) -> None:
        self._inbox = inbox
        self._entry = entry
        self._replay = replay

    def remember(self, command_id: str, expires_at: datetime) -> bool:
        entry = self._entry
        if entry.state is InboxState.ACCEPTED and entry.claimed_id == command_id:
            return True
        return self._replay.remember(command_id, expires_at, also=self._inbox.claimer(entry.id, command_id))
