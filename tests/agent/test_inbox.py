"""The command inbox as a store (agent/inbox.py): keep, dedupe of redeliveries, what a restart
finds, the claim shared with the replay cache, done with the terminal reply, pruning."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.errors import InboxError, MessageTooLarge
from agent.inbox import Inbox, InboxState
from agent.outbox import Outbox
from agent.replay import SqliteReplayCache
from agent.storage import database_path
from agent.stores import open_agent_database
from protocol import MAX_PAYLOAD_BYTES, Reply, ReplyType, UpKind

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_agent_database(tmp_path)
    yield conn
    conn.close()


def _inbox(
    tmp_path: Path,
    db: sqlite3.Connection | None = None,
    *,
    now: Callable[[], float] | None = None,
    keep_done: float = 24 * 3600.0,
    durable: bool = True,
) -> Inbox:
    return Inbox(database_path(tmp_path), db=db, now=now or Clock(), keep_done=keep_done, durable=durable)


def test_a_kept_command_is_on_disk_for_the_next_process(tmp_path: Path) -> None:
    first = _inbox(tmp_path)
    entry = first.keep(b'{"id": "c1"}')
    first.close()
    assert entry is not None
    again = _inbox(tmp_path)
    try:
        [found] = again.unfinished()
    finally:
        again.close()
    assert (found.id, found.payload, found.state, found.claimed_id) == (
        entry.id,
        b'{"id": "c1"}',
        InboxState.RECEIVED,
        None,
    )


def test_a_redelivery_of_kept_bytes_is_a_no_op(tmp_path: Path, db: sqlite3.Connection) -> None:
    inbox = _inbox(tmp_path, db)
    assert inbox.keep(b"cmd-1") is not None
    assert inbox.keep(b"cmd-1", redelivered=True) is None
    assert inbox.keep(b"cmd-2", redelivered=True) is not None  # never seen: kept
    assert len(inbox.unfinished()) == 2


def test_a_redelivery_after_the_command_finished_is_still_a_no_op(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    inbox = _inbox(tmp_path, db)
    entry = inbox.keep(b"cmd-1")
    assert entry is not None
    inbox.finish(entry.id)
    assert inbox.keep(b"cmd-1", redelivered=True) is None
    assert inbox.unfinished() == []


def test_the_same_bytes_without_dup_are_a_new_delivery_for_the_guard(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    """Not the broker re-sending: someone published them again (a replay the guard must see)."""
    inbox = _inbox(tmp_path, db)
    first = inbox.keep(b"cmd-1")
    second = inbox.keep(b"cmd-1")
    assert first is not None
    assert second is not None
    assert first.id != second.id


def test_an_oversized_payload_is_kept_only_as_far_as_the_guard_needs(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    inbox = _inbox(tmp_path, db)
    entry = inbox.keep(b"x" * (3 * MAX_PAYLOAD_BYTES))
    assert entry is not None
    assert len(entry.payload) == MAX_PAYLOAD_BYTES + 1  # still over the limit: rejected as malformed


def test_the_claim_records_the_id_and_the_accepted_state_together(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    inbox = _inbox(tmp_path, db)
    replay = SqliteReplayCache(database_path(tmp_path), db=db)
    entry = inbox.keep(b"cmd-1")
    assert entry is not None
    assert inbox.claim(entry, replay).remember("C-1", EXPIRES) is True
    stored = inbox.get(entry.id)
    assert stored is not None
    assert (stored.state, stored.claimed_id) == (InboxState.ACCEPTED, "C-1")
    assert len(replay) == 1


def test_a_row_that_claimed_its_id_is_not_a_replay_after_a_restart(tmp_path: Path) -> None:
    path = database_path(tmp_path)
    db = open_agent_database(tmp_path)
    entry = _inbox(tmp_path, db).keep(b"cmd-1")
    assert entry is not None
    _inbox(tmp_path, db).claim(entry, SqliteReplayCache(path, db=db)).remember("C-1", EXPIRES)
    db.close()

    db = open_agent_database(tmp_path)  # the next process
    try:
        inbox, replay = _inbox(tmp_path, db), SqliteReplayCache(path, db=db)
        [resumed] = inbox.unfinished()
        assert resumed.state is InboxState.ACCEPTED
        assert inbox.claim(resumed, replay).remember("C-1", EXPIRES) is True
        # Any other delivery of that id is a replay, also one kept before the restart.
        other = inbox.keep(b"cmd-1 again")
        assert other is not None
        assert inbox.claim(other, replay).remember("C-1", EXPIRES) is False
        # A row that has not claimed the id cannot pretend to own it.
        assert replay.remember("C-1", EXPIRES) is False
    finally:
        db.close()


def test_a_refused_claim_leaves_the_row_received(tmp_path: Path, db: sqlite3.Connection) -> None:
    inbox = _inbox(tmp_path, db)
    replay = SqliteReplayCache(database_path(tmp_path), db=db)
    assert replay.remember("C-1", EXPIRES)
    entry = inbox.keep(b"replay of C-1")
    assert entry is not None
    assert inbox.claim(entry, replay).remember("C-1", EXPIRES) is False
    stored = inbox.get(entry.id)
    assert stored is not None
    assert stored.state is InboxState.RECEIVED


def _reply(seq: int, output: str = "") -> Reply:
    return Reply(
        device_id="dev-1",
        seq=seq,
        ts=datetime.now(UTC),
        command_id="C-1",
        type=ReplyType.RESULT,
        ok=True,
        output=output,
    )


def test_the_row_is_done_in_the_transaction_of_its_terminal_reply(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    inbox = _inbox(tmp_path, db)
    outbox = Outbox(database_path(tmp_path), "dev-1", db=db)
    entry = inbox.keep(b"cmd-1")
    assert entry is not None
    inbox.mark_started(entry.id)  # not accepted: the state stays (only accepted rows start)
    stored = inbox.get(entry.id)
    assert stored is not None
    assert stored.state is InboxState.RECEIVED

    too_large = {"blob": "x" * (MAX_PAYLOAD_BYTES + 10)}
    with pytest.raises(MessageTooLarge):
        outbox.append(
            UpKind.REPLY,
            lambda seq: _reply(seq).model_copy(update={"data": too_large}),
            also=inbox.finisher(entry.id),
        )
    assert [e.id for e in inbox.unfinished()] == [entry.id]  # the reply failed: not done

    outbox.append(UpKind.REPLY, _reply, also=inbox.finisher(entry.id))
    assert inbox.unfinished() == []
    assert outbox.depth() == 1


def test_started_is_recorded_for_an_accepted_row(tmp_path: Path, db: sqlite3.Connection) -> None:
    inbox = _inbox(tmp_path, db)
    entry = inbox.keep(b"cmd-1")
    assert entry is not None
    inbox.claim(entry, SqliteReplayCache(database_path(tmp_path), db=db)).remember("C-1", EXPIRES)
    inbox.mark_started(entry.id)
    [row] = inbox.unfinished()
    assert (row.state, row.claimed_id) == (InboxState.STARTED, "C-1")


def test_done_rows_are_pruned_after_keep_done_and_unfinished_ones_never(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    clock = Clock()
    inbox = _inbox(tmp_path, db, now=clock, keep_done=3600.0)
    old = inbox.keep(b"old")
    waiting = inbox.keep(b"waiting")
    assert old is not None
    assert waiting is not None
    inbox.finish(old.id)
    clock.t += 3599
    assert inbox.prune() == 0
    clock.t += 2
    for i in range(50):  # busy: every keep prunes on the way
        entry = inbox.keep(f"cmd-{i}".encode())
        assert entry is not None
        inbox.finish(entry.id)
    assert inbox.get(old.id) is None
    assert inbox.get(waiting.id) is not None  # unfinished: kept however old
    clock.t += 3601
    assert inbox.prune() == 50
    assert inbox.counts() == {"received": 1}


def test_a_durable_keep_restores_the_connection_sync_setting(tmp_path: Path) -> None:
    db = open_agent_database(tmp_path, sync="normal")
    try:
        inbox = _inbox(tmp_path, db, durable=True)
        assert inbox.keep(b"cmd") is not None
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again
    finally:
        db.close()


def test_a_broken_database_is_an_inbox_error_so_the_link_does_not_acknowledge(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    inbox = _inbox(tmp_path, db)
    db.execute("DROP TABLE inbox")
    with pytest.raises(InboxError, match="cannot store a received command"):
        inbox.keep(b"cmd")
