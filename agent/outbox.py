"""Disk-backed store-and-forward for every up-message (SQLite; see :mod:`agent.storage`).

A message is assigned its ``seq``, encoded and committed *before* anyone tries to publish it.
Its states: *queued* (``sent_at`` NULL) until the broker acknowledges the publish (QoS 1 PUBACK,
:meth:`Outbox.ack`), then *sent, unconfirmed* until the server confirms it stored it (a receipt,
:meth:`Outbox.confirm`), then deleted. A broker acknowledges on receipt and may lose what it
has not yet delivered (kill -9 before its save): :meth:`Outbox.requeue`, at every connection,
puts the unconfirmed messages back in the queue and the server's dedup on ``(device, seq)``
absorbs what was not lost. From the start: a fresh agent keeps what the broker acknowledged
until the server confirms it, before any receipt arrived (the first receipt takes a receipt
interval, and a broker killed in the agent's first seconds must not take acknowledged messages
with it — measured: 586 of 5,429 lost under load when the protection waited for a first
receipt). Only after ``unconfirmed_max_age`` seconds without a receipt — counted from the last
receipt (``receipts_at``, remembered in the file) or from this opening, whichever is later: an
old server, or receipts turned off — does a PUBACK delete the message as before receipts existed.
The unconfirmed set is bounded by ``max_messages`` and ``unconfirmed_max_age``: beyond either,
the oldest are forgotten (counted: ``dropped_unconfirmed``; the broker had acknowledged them).
``seq`` comes from a counter row, so it survives restarts and never goes backwards, even when
every message has been deleted.

Bounded: above ``max_messages`` queued messages the oldest queued *telemetry* is dropped (and counted); events,
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
from collections.abc import Callable, Sequence
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
# Receipts (module docstring): an outbox written before them has no sent_at column; adding it
# keeps every row queued, as it was. The partial index keeps pending() off the unconfirmed rows.
RECEIPT_SCHEMA = """
CREATE INDEX IF NOT EXISTS outbox_queued ON outbox (seq) WHERE sent_at IS NULL;
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped_unconfirmed', 0), ('receipts_at', 0);
"""
AGE_CHECK_EVERY = 10.0  # seconds between looks for unconfirmed messages past their age bound

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
    by_kind: dict[str, int]  # queued messages by kind
    unconfirmed: int = 0  # sent (PUBACK) and not yet confirmed by the server
    dropped_unconfirmed: int = 0
    last_receipt_at: datetime | None = None  # None: this outbox never saw a receipt


class Outbox:
    """The persistent queue of one device. Single writer: the agent holds the data-dir lock."""

    def __init__(
        self,
        path: Path,
        device_id: str,
        *,
        max_messages: int = 10_000,
        unconfirmed_max_age: float = 3600.0,
        now: Callable[[], float] = time.time,
        wall: Callable[[], float] = time.time,
        db: sqlite3.Connection | None = None,
    ) -> None:
        """``now`` stamps ``created_at`` (the agent's clock, maybe simulated); ``wall`` is real
        time, for the unconfirmed messages' age and the last receipt."""
        self.path = path
        self._owns_db = db is None
        self.device_id = device_id
        self.max_messages = max_messages
        self.unconfirmed_max_age = unconfirmed_max_age
        self._now = now
        self._wall = wall
        self._warned_full = False
        self._warned_unconfirmed = False
        self._age_checked = 0.0
        self._crash_at = _mid_write_crash_at()
        self._appends = 0
        try:
            self._db = db if db is not None else connect(path)
            self._db.executescript(SCHEMA)
            if not _has_sent_at(self._db):
                self._db.execute("ALTER TABLE outbox ADD COLUMN sent_at REAL")
            self._db.executescript(RECEIPT_SCHEMA)
            self._depth: int = self._db.execute(
                "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
            ).fetchone()[0]
            self._unconfirmed: int = self._db.execute(
                "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"
            ).fetchone()[0]
            self._dropped: int = self._counter("dropped_telemetry")
            self._dropped_unconfirmed: int = self._counter("dropped_unconfirmed")
            self._receipts_at: float = float(self._counter("receipts_at"))
            self._opened_at = self._wall()
            self._confirming = self._receipts_fresh()
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
                superseded = superseded_sent = 0
                if kind in _SUPERSEDING:
                    gone = self._db.execute(
                        "DELETE FROM outbox WHERE kind = ? RETURNING sent_at IS NOT NULL", (kind.value,)
                    ).fetchall()
                    superseded_sent = sum(sent for (sent,) in gone)
                    superseded = len(gone) - superseded_sent
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
        self._unconfirmed -= superseded_sent
        self._dropped += dropped
        return OutboxEntry(seq, kind, topic, payload, retain, created)

    def _mid_write(self, seq: int) -> None:
        """The crash point, inside the transaction: SIGKILL, so neither COMMIT nor ROLLBACK runs."""
        self._appends += 1
        if self._appends >= (self._crash_at or 1):
            os.write(2, f"fleetcare agent: crash point {MID_WRITE} reached (seq {seq}): SIGKILL\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)

    def _enforce_bound(self, depth: int) -> int:
        """Inside append's transaction: drop the oldest queued telemetry above the bound."""
        excess = depth - self.max_messages
        if excess <= 0:
            self._warned_full = False
            return 0
        dropped = self._db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox "
            "WHERE kind = 'telemetry' AND sent_at IS NULL ORDER BY seq LIMIT ?)",
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

    @property
    def confirming(self) -> bool:
        """Whether a PUBACK only marks a message sent (the server confirms, module docstring)."""
        return self._confirming

    def _receipts_fresh(self) -> bool:
        """Whether the server may still be confirming: a receipt, or this opening, within
        ``unconfirmed_max_age`` (module docstring: protected from the start)."""
        return self._wall() - max(self._receipts_at, self._opened_at) <= self.unconfirmed_max_age

    def ack(self, *seqs: int) -> None:
        """The broker acknowledged ``seqs``, in one statement: mark them sent (unconfirmed), or,
        from a server that does not confirm, forget them. Unknown seqs (superseded, dropped,
        already confirmed) are fine."""
        if not seqs:
            return
        if self._confirming and not self._receipts_fresh():
            self._confirming = False
            logger.warning(
                "outbox of %s: no receipt from the server for %.0f s; forgetting messages once the "
                "broker acknowledges them again, until the next receipt",
                self.device_id,
                self.unconfirmed_max_age,
            )
        one = len(seqs) == 1
        args: tuple[object, ...] = seqs if one else (json.dumps(seqs),)
        try:
            if self._confirming:
                sent = self._db.execute(_MARK_SENT[one], (self._wall(), *args)).rowcount
                self._unconfirmed += sent
                self._depth -= sent
                self._bound_unconfirmed()
            else:
                self._depth -= self._db.execute(_FORGET[one], args).rowcount
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot record acknowledged messages {list(seqs)}: {exc}") from exc

    def _bound_unconfirmed(self) -> None:
        """Forget the oldest unconfirmed messages beyond ``max_messages``, and (every
        AGE_CHECK_EVERY s) those unconfirmed for longer than ``unconfirmed_max_age``."""
        now = self._wall()
        excess = self._unconfirmed - self.max_messages
        aged = now - self._age_checked >= AGE_CHECK_EVERY and self._unconfirmed > 0
        if excess <= 0 and not aged:
            self._warned_unconfirmed = False
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            dropped = 0
            if excess > 0:
                dropped = self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox "
                    "WHERE sent_at IS NOT NULL ORDER BY seq LIMIT ?)",
                    (excess,),
                ).rowcount
            if aged:
                self._age_checked = now
                dropped += self._db.execute(
                    "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
                    (now - self.unconfirmed_max_age,),
                ).rowcount
            if dropped:
                self._db.execute(
                    "UPDATE counters SET value = value + ? WHERE name = 'dropped_unconfirmed'", (dropped,)
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._unconfirmed -= dropped
        self._dropped_unconfirmed += dropped
        if dropped and not self._warned_unconfirmed:
            self._warned_unconfirmed = True
            logger.warning(
                "outbox of %s: forgot %d message(s) the broker acknowledged and the server has not "
                "confirmed (bounds: %d messages, %.0f s); logged once until the set is within them",
                self.device_id,
                dropped,
                self.max_messages,
                self.unconfirmed_max_age,
            )

    def confirm(self, ranges: Sequence[tuple[int, int]]) -> int:
        """The server handled the seqs in ``ranges`` (inclusive): delete them, queued or sent,
        and remember that this server confirms, in one transaction. Returns how many went."""
        now = self._wall()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                sent = queued = 0
                for first, last in ranges:
                    for (was_sent,) in self._db.execute(
                        "DELETE FROM outbox WHERE seq BETWEEN ? AND ? RETURNING sent_at IS NOT NULL",
                        (first, last),
                    ).fetchall():
                        sent += was_sent
                        queued += not was_sent
                self._db.execute("UPDATE counters SET value = ? WHERE name = 'receipts_at'", (int(now),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot delete confirmed messages: {exc}") from exc
        self._unconfirmed -= sent
        self._depth -= queued
        self._receipts_at = now
        if not self._confirming:
            self._confirming = True
            logger.info(
                "outbox of %s: the server confirms what it stores; messages are kept until confirmed",
                self.device_id,
            )
        return sent + queued

    def requeue(self) -> int:
        """A new connection: the unconfirmed messages go back in the queue, to be published
        again in seq order (the broker may have lost them). Returns how many."""
        if not self._unconfirmed:
            return 0
        try:
            moved = self._db.execute("UPDATE outbox SET sent_at = NULL WHERE sent_at IS NOT NULL").rowcount
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot requeue unconfirmed messages: {exc}") from exc
        self._unconfirmed = 0
        self._depth += moved
        return moved

    # -- reading -----------------------------------------------------------------------------

    def pending(self, limit: int = 100) -> list[OutboxEntry]:
        """The oldest ``limit`` queued messages, in seq order."""
        rows = self._db.execute(
            "SELECT seq, kind, topic, payload, retain, created_at FROM outbox WHERE sent_at IS NULL "
            "ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [OutboxEntry(s, UpKind(k), t, bytes(p), bool(r), c) for s, k, t, p, r, c in rows]

    def depth(self) -> int:
        """Queued messages: not yet acknowledged by the broker."""
        return self._depth

    def unconfirmed(self) -> int:
        """Messages the broker acknowledged and the server has not confirmed yet."""
        return self._unconfirmed

    @property
    def dropped_unconfirmed(self) -> int:
        return self._dropped_unconfirmed

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


def _has_sent_at(db: sqlite3.Connection) -> bool:
    return any(row[1] == "sent_at" for row in db.execute("PRAGMA table_info(outbox)"))


# Indexed by "one seq": the usual single PUBACK binds it; a window binds a JSON list.
_MARK_SENT = {
    True: "UPDATE outbox SET sent_at = ? WHERE sent_at IS NULL AND seq = ?",
    False: "UPDATE outbox SET sent_at = ? WHERE sent_at IS NULL AND seq IN (SELECT value FROM json_each(?))",
}
_FORGET = {
    True: "DELETE FROM outbox WHERE seq = ?",
    False: "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
}
# Indexed by "has sent_at": read_stats may look at an outbox written before receipts.
_QUEUED_BY_KIND = {
    True: "SELECT kind, count(*) FROM outbox WHERE sent_at IS NULL GROUP BY kind",
    False: "SELECT kind, count(*) FROM outbox GROUP BY kind",
}
_OLDEST_QUEUED = {
    True: "SELECT seq, kind, created_at FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT 1",
    False: "SELECT seq, kind, created_at FROM outbox ORDER BY seq LIMIT 1",
}
_UNCONFIRMED = {
    True: "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL",
    False: "SELECT 0",
}


def _stats(db: sqlite3.Connection) -> OutboxStats:
    counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
    receipts = _has_sent_at(db)
    by_kind = dict(db.execute(_QUEUED_BY_KIND[receipts]).fetchall())
    oldest = db.execute(_OLDEST_QUEUED[receipts]).fetchone()
    unconfirmed = db.execute(_UNCONFIRMED[receipts]).fetchone()[0]
    receipts_at = int(counters.get("receipts_at", 0))
    return OutboxStats(
        depth=sum(by_kind.values()),
        next_seq=int(counters.get("next_seq", 0)),
        dropped_telemetry=int(counters.get("dropped_telemetry", 0)),
        oldest_seq=oldest[0] if oldest else None,
        oldest_kind=oldest[1] if oldest else None,
        oldest_created_at=datetime.fromtimestamp(oldest[2], UTC) if oldest else None,
        by_kind=by_kind,
        unconfirmed=int(unconfirmed),
        dropped_unconfirmed=int(counters.get("dropped_unconfirmed", 0)),
        last_receipt_at=datetime.fromtimestamp(receipts_at, UTC) if receipts_at else None,
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
