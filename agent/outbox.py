"""Disk-backed store-and-forward for every up-message (SQLite; see :mod:`agent.storage`).

A message is assigned its ``seq``, encoded and committed *before* anyone tries to publish it;
it is deleted (:meth:`Outbox.ack`) only after the broker acknowledged the publish (QoS 1
PUBACK). ``seq`` comes from a counter row, so it survives restarts and never goes backwards,
even when every message has been deleted.

Bounded: above ``max_messages`` the oldest *telemetry* is dropped (and counted); events,
replies, status and inventory are never dropped for space. A new retained snapshot
(``status``, ``inventory``) supersedes queued ones of its kind: only the latest is meaningful.

Calls are synchronous on purpose. Each is one or two indexed statements on a small local
database in WAL mode with ``synchronous=NORMAL`` (no fsync per commit): tens of microseconds,
less than a hop to a worker thread, and plugins' ``emit_event`` must not block nor await.
Durability: a committed message survives the agent crashing or being killed; a power cut may
lose the commits made since the last WAL checkpoint.

The runtime passes the connection of ``data_dir/agent.sqlite3`` (``db=``), shared with the
replay cache and the consent store; given only a path, the outbox opens and owns its own.

Fault injection, for tests only: ``FLEETCARE_AGENT_CRASH_POINT=outbox_mid_write`` (or
``outbox_mid_write:<n>``) makes the agent SIGKILL itself inside its first (``n``-th) append since
it started, after the message row and the seq counter are written and before the COMMIT
(tests/chaos/test_process_kills.py: the file still opens, the message is not there, its seq is
not consumed). The other points are in agent/crashpoints.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent.errors import MessageTooLarge, OutboxError
from agent.storage import connect
from protocol import MAX_PAYLOAD_BYTES, UpKind, UpMessage, encode, up_topic

__all__ = ["Outbox", "OutboxEntry", "OutboxStats", "read_stats"]

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('next_seq', 0), ('dropped_telemetry', 0);
CREATE TABLE IF NOT EXISTS once_keys (key TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""

CRASH_POINT_ENV = "FLEETCARE_AGENT_CRASH_POINT"  # agent/crashpoints.py's, not imported: no new edge
MID_WRITE = "outbox_mid_write"


def _mid_write_crash_at() -> int | None:
    """The append to die in (module docstring), or None: the crash point is not set."""
    point, _, nth = os.environ.get(CRASH_POINT_ENV, "").partition(":")
    if point != MID_WRITE:
        return None
    if nth and not nth.isdigit():
        raise ValueError(f"{CRASH_POINT_ENV}={point}:{nth}: the append number must be a positive integer")
    return max(1, int(nth or 1))


# Retained snapshots: a newer one makes the queued ones pointless.
_SUPERSEDING = frozenset({UpKind.STATUS, UpKind.INVENTORY})


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    kind: UpKind
    topic: str
    payload: bytes
    retain: bool
    created_at: float  # unix time from the agent's clock


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    next_seq: int
    dropped_telemetry: int
    oldest_seq: int | None
    oldest_kind: str | None
    oldest_created_at: datetime | None
    by_kind: dict[str, int]


class Outbox:
    """The persistent queue of one device. Single writer: the agent holds the data-dir lock."""

    def __init__(
        self,
        path: Path,
        device_id: str,
        *,
        max_messages: int = 10_000,
        now: Callable[[], float] = time.time,
        db: sqlite3.Connection | None = None,
    ) -> None:
        self.path = path
        self._owns_db = db is None
        self.device_id = device_id
        self.max_messages = max_messages
        self._now = now
        self._warned_full = False
        self._crash_at = _mid_write_crash_at()
        self._appends = 0
        try:
            self._db = db if db is not None else connect(path)
            self._db.executescript(SCHEMA)
            self._depth: int = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
            self._dropped: int = self._counter("dropped_telemetry")
            # The one writer (the agent holds the data-dir lock) keeps the counter in memory too:
            # no read per message. The row is still updated in each append's transaction.
            self._next_seq: int = self._counter("next_seq")
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open the outbox database {path}: {exc}") from exc

    # -- writing -----------------------------------------------------------------------------

    def append(
        self,
        kind: UpKind,
        build: Callable[[int], UpMessage],
        *,
        retain: bool = False,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> OutboxEntry:
        """Assign the next seq, build the message with it, store it; all in one transaction.

        ``build(seq)`` must return the message of ``kind`` carrying that ``seq``. Raises
        :class:`MessageTooLarge` (nothing stored, seq not consumed) for a message the broker and
        server would refuse: a poison message must never block the queue. ``also`` runs in the
        same transaction (a store sharing the connection: the inbox marks a command done with
        its terminal reply, agent/inbox.py); nothing of it stays if the append fails.
        """
        entry = self._append(kind, build, retain=retain, once=None, also=also)
        assert entry is not None
        return entry

    def append_once(
        self, key: str, kind: UpKind, build: Callable[[int], UpMessage], *, retain: bool = False
    ) -> OutboxEntry | None:
        """Like :meth:`append`, but at most once per ``key`` for the life of this outbox: the key
        is stored in the same transaction as the message. None if ``key`` was queued before."""
        return self._append(kind, build, retain=retain, once=key, also=None)

    def has_once(self, key: str) -> bool:
        row = self._db.execute("SELECT 1 FROM once_keys WHERE key = ?", (key,)).fetchone()
        return row is not None

    def _append(
        self,
        kind: UpKind,
        build: Callable[[int], UpMessage],
        *,
        retain: bool,
        once: str | None,
        also: Callable[[sqlite3.Connection], None] | None,
    ) -> OutboxEntry | None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if once is not None and self.has_once(once):
                    self._db.execute("ROLLBACK")
                    return None
                seq = self._next_seq
                payload = encode(build(seq))
                if len(payload) > MAX_PAYLOAD_BYTES:
                    raise MessageTooLarge(kind.value, len(payload), MAX_PAYLOAD_BYTES)
                superseded = 0
                if kind in _SUPERSEDING:
                    superseded = self._db.execute("DELETE FROM outbox WHERE kind = ?", (kind.value,)).rowcount
                created = self._now()
                topic = up_topic(self.device_id, kind)
                self._db.execute(
                    "INSERT INTO outbox (seq, kind, topic, payload, retain, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (seq, kind.value, topic, payload, int(retain), created),
                )
                self._db.execute("UPDATE counters SET value = ? WHERE name = 'next_seq'", (seq + 1,))
                if self._crash_at is not None:
                    self._mid_write(seq)
                if once is not None:
                    self._db.execute("INSERT INTO once_keys (key, seq) VALUES (?, ?)", (once, seq))
                if also is not None:
                    also(self._db)
                depth = self._depth - superseded + 1
                dropped = self._enforce_bound(depth)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot store a {kind.value} message: {exc}") from exc
        self._next_seq = seq + 1
        self._depth = depth - dropped
        self._dropped += dropped
        return OutboxEntry(seq, kind, topic, payload, retain, created)

    def _mid_write(self, seq: int) -> None:
        """The crash point, inside the transaction: SIGKILL, so neither COMMIT nor ROLLBACK runs."""
        self._appends += 1
        if self._appends >= (self._crash_at or 1):
            os.write(2, f"fleetcare agent: crash point {MID_WRITE} reached (seq {seq}): SIGKILL\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)

    def _enforce_bound(self, depth: int) -> int:
        """Inside append's transaction: drop the oldest telemetry above the bound."""
        excess = depth - self.max_messages
        if excess <= 0:
            self._warned_full = False
            return 0
        dropped = self._db.execute(
            "DELETE FROM outbox WHERE seq IN "
            "(SELECT seq FROM outbox WHERE kind = 'telemetry' ORDER BY seq LIMIT ?)",
            (excess,),
        ).rowcount
        if dropped:
            self._db.execute(
                "UPDATE counters SET value = value + ? WHERE name = 'dropped_telemetry'", (dropped,)
            )
        if dropped < excess and not self._warned_full:
            self._warned_full = True
            logger.warning(
                "outbox of %s holds %d messages (bound %d) and no telemetry is left to drop: "
                "keeping events, replies, status and inventory (they are never dropped)",
                self.device_id,
                depth - dropped,
                self.max_messages,
            )
        return dropped

    def reserve_seq(self) -> int:
        """Consume one seq for a message that is not queued here (the last will)."""
        try:
            seq = self._next_seq
            self._db.execute("UPDATE counters SET value = ? WHERE name = 'next_seq'", (seq + 1,))
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot reserve a sequence number: {exc}") from exc
        self._next_seq = seq + 1
        return seq

    def ack(self, *seqs: int) -> None:
        """The broker acknowledged ``seqs``: forget them, in one transaction. Unknown seqs
        (superseded, dropped) are fine."""
        if not seqs:
            return
        try:
            if len(seqs) == 1:
                deleted = self._db.execute("DELETE FROM outbox WHERE seq = ?", seqs).rowcount
            else:
                deleted = self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
                    (json.dumps(seqs),),
                ).rowcount
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot delete acknowledged messages {list(seqs)}: {exc}") from exc
        self._depth -= deleted

    # -- reading -----------------------------------------------------------------------------

    def pending(self, limit: int = 100) -> list[OutboxEntry]:
        """The oldest ``limit`` messages, in seq order."""
        rows = self._db.execute(
            "SELECT seq, kind, topic, payload, retain, created_at FROM outbox ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [OutboxEntry(s, UpKind(k), t, bytes(p), bool(r), c) for s, k, t, p, r, c in rows]

    def depth(self) -> int:
        return self._depth

    @property
    def dropped_telemetry(self) -> int:
        return self._dropped

    def next_seq(self) -> int:
        return self._next_seq

    def stats(self) -> OutboxStats:
        return _stats(self._db)

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the connection if the outbox opened it (a shared one belongs to the runtime)."""
        if self._owns_db:
            self._db.close()


def _stats(db: sqlite3.Connection) -> OutboxStats:
    counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
    by_kind = dict(db.execute("SELECT kind, count(*) FROM outbox GROUP BY kind").fetchall())
    oldest = db.execute("SELECT seq, kind, created_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
    return OutboxStats(
        depth=sum(by_kind.values()),
        next_seq=int(counters.get("next_seq", 0)),
        dropped_telemetry=int(counters.get("dropped_telemetry", 0)),
        oldest_seq=oldest[0] if oldest else None,
        oldest_kind=oldest[1] if oldest else None,
        oldest_created_at=datetime.fromtimestamp(oldest[2], UTC) if oldest else None,
        by_kind=by_kind,
    )


def read_stats(path: Path) -> OutboxStats | None:
    """Read-only look at an outbox (safe while the agent runs); None if there is none yet.

    ``path`` is ``data_dir/agent.sqlite3`` or, before an agent migrated it, ``outbox.sqlite3``.
    The database can exist without an outbox: ``fleetcare agent consent`` ran before the agent."""
    if not path.exists():
        return None
    try:
        db = connect(path, read_only=True)
        try:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchone() is None:
                return None
            return _stats(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot read the outbox database {path}: {exc}") from exc
