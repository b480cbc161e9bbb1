"""The outbox's delivery states: queued → sent (PUBACK) → confirmed (the server's receipt).

agent/outbox.py: a PUBACK only marks a message sent once this outbox has seen a receipt; the
unconfirmed ones go back in the queue at every connection; bounded by count and age; an outbox
file written before receipts opens with every message still queued.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.outbox import AGE_CHECK_EVERY, Outbox, read_stats
from protocol import Event, Status, UpKind

TS = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DEV = "dev-r"


class Wall:
    """Real time, as the outbox sees it (``wall=``), moved by the test."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def _event(seq: int) -> Event:
    return Event(device_id=DEV, seq=seq, ts=TS, event="fault.raised")


def _open(path: Path, wall: Wall, *, max_messages: int = 10_000, max_age: float = 3600.0) -> Outbox:
    return Outbox(path, DEV, max_messages=max_messages, unconfirmed_max_age=max_age, wall=wall)


def _fill(box: Outbox, n: int) -> list[int]:
    return [box.append(UpKind.EVENT, _event).seq for _ in range(n)]


def _rows(path: Path) -> dict[int, float | None]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT seq, sent_at FROM outbox ORDER BY seq"))
    finally:
        db.close()


def test_before_any_receipt_a_puback_keeps_the_message_and_only_an_old_server_makes_it_forget(
    tmp_path: Path,
) -> None:
    """Protected from the start: the broker may be killed before the first receipt arrives (the
    chaos broker-kill test lost 586 acknowledged messages under load when this waited for one).
    Only after ``max_age`` without any receipt since the outbox opened does a PUBACK forget."""
    wall = Wall()
    box = _open(tmp_path / "o.sqlite3", wall, max_age=100)
    seqs = _fill(box, 3)
    box.ack(*seqs)
    assert box.confirming
    assert (box.depth(), box.unconfirmed()) == (0, 3)
    assert set(_rows(tmp_path / "o.sqlite3")) == set(seqs)
    wall.t += 101  # no receipt at all: an old server, or receipts turned off
    later = _fill(box, 1)
    box.ack(*later)
    assert not box.confirming
    assert set(_rows(tmp_path / "o.sqlite3")) <= set(seqs)  # the new one forgotten on its PUBACK


def test_once_the_server_confirms_a_puback_keeps_the_message_until_its_receipt(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    wall = Wall()
    box = _open(path, wall)
    assert box.confirm([(0, 0)]) == 0  # nothing there yet, but this server confirms
    assert box.confirming
    seqs = _fill(box, 5)
    box.ack(seqs[0])  # one PUBACK
    box.ack(*seqs[1:4])  # a window of them
    assert (box.depth(), box.unconfirmed()) == (1, 4)
    assert [e.seq for e in box.pending()] == [seqs[4]]  # sent ones are not published again
    assert set(_rows(path).values()) == {wall.t, None}

    assert box.confirm([(seqs[0], seqs[1]), (seqs[3], seqs[4])]) == 4  # the queued one too
    assert (box.depth(), box.unconfirmed()) == (0, 1)
    assert list(_rows(path)) == [seqs[2]]
    stats = box.stats()
    assert (stats.depth, stats.unconfirmed, stats.by_kind) == (0, 1, {})
    assert stats.last_receipt_at == datetime.fromtimestamp(int(wall.t), UTC)


def test_requeue_puts_the_unconfirmed_back_first_in_seq_order_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    wall = Wall()
    box = _open(path, wall)
    box.confirm([(0, 0)])
    seqs = _fill(box, 4)
    box.ack(seqs[1], seqs[2])
    box.close()

    reopened = _open(path, wall)  # the receipt mode and the sent state are in the file
    assert reopened.confirming
    assert (reopened.depth(), reopened.unconfirmed()) == (2, 2)
    assert reopened.requeue() == 2
    assert (reopened.depth(), reopened.unconfirmed()) == (4, 0)
    assert [e.seq for e in reopened.pending()] == seqs
    assert reopened.requeue() == 0


def test_a_new_snapshot_supersedes_a_sent_one_too(tmp_path: Path) -> None:
    box = _open(tmp_path / "o.sqlite3", Wall())
    box.confirm([(0, 0)])
    status = box.append(UpKind.STATUS, lambda seq: Status(device_id=DEV, seq=seq, ts=TS, online=True))
    box.ack(status.seq)
    assert box.unconfirmed() == 1
    box.append(UpKind.STATUS, lambda seq: Status(device_id=DEV, seq=seq, ts=TS, online=False))
    assert (box.depth(), box.unconfirmed()) == (1, 0)


def test_the_unconfirmed_set_is_bounded_by_count_oldest_first_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = _open(tmp_path / "o.sqlite3", Wall(), max_messages=10)
    box.confirm([(0, 0)])
    seqs = _fill(box, 14)
    with caplog.at_level(logging.WARNING, logger="agent.outbox"):
        box.ack(*seqs[:12])
        box.ack(*seqs[12:])
    assert box.unconfirmed() == 10
    assert box.dropped_unconfirmed == 4
    assert list(_rows(tmp_path / "o.sqlite3")) == seqs[4:]
    assert box.stats().dropped_unconfirmed == 4
    assert len([r for r in caplog.records if "forgot" in r.message]) == 1


def test_the_unconfirmed_set_is_bounded_by_age(tmp_path: Path) -> None:
    wall = Wall()
    box = _open(tmp_path / "o.sqlite3", wall, max_age=100)
    box.confirm([(0, 0)])
    old = _fill(box, 3)
    box.ack(*old)
    wall.t += 60
    box.confirm([(10_000, 10_000)])  # the server still confirms (others' seqs)
    fresh = _fill(box, 2)
    box.ack(*fresh)
    assert box.unconfirmed() == 5
    wall.t += 50 + AGE_CHECK_EVERY  # the old ones are 110+ s unconfirmed, the fresh ones 60+
    box.confirm([(10_000, 10_000)])
    box.ack(box.append(UpKind.EVENT, _event).seq)
    assert box.confirming
    assert box.dropped_unconfirmed == 3
    assert sorted(_rows(tmp_path / "o.sqlite3")) == [*fresh, fresh[-1] + 1]


def test_a_server_that_stops_confirming_is_noticed_and_the_agent_goes_back_to_pubacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wall = Wall()
    box = _open(tmp_path / "o.sqlite3", wall, max_age=100)
    box.confirm([(0, 0)])
    wall.t += 101  # receipts turned off, or an old server after a migration back
    seqs = _fill(box, 2)
    with caplog.at_level(logging.WARNING, logger="agent.outbox"):
        box.ack(*seqs)
    assert not box.confirming
    assert (box.depth(), box.unconfirmed()) == (0, 0)
    assert any("no receipt from the server for 100 s" in r.message for r in caplog.records)
    box.confirm([(5, 5)])  # receipts again
    assert box.confirming


OLD_SCHEMA = """
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
    retain INTEGER NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX outbox_kind ON outbox (kind, seq);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters (name, value) VALUES ('next_seq', 3), ('dropped_telemetry', 7);
CREATE TABLE once_keys (key TEXT PRIMARY KEY, seq INTEGER NOT NULL);
INSERT INTO outbox VALUES (1, 'event', 'fc/v1/d/dev-r/up/event', x'7b7d', 0, 1.0);
INSERT INTO outbox VALUES (2, 'event', 'fc/v1/d/dev-r/up/event', x'7b7d', 0, 2.0);
"""
"""The outbox as the code before receipts wrote it (agent/outbox.py at 1e972fe)."""


def test_an_outbox_written_before_receipts_opens_with_every_message_queued(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.close()
    before = read_stats(path)  # read-only, not migrated: `fleetcare agent outbox` on an old file
    assert before is not None
    assert (before.depth, before.unconfirmed, before.last_receipt_at) == (2, 0, None)

    box = _open(path, Wall())
    assert (box.depth(), box.unconfirmed(), box.next_seq(), box.dropped_telemetry) == (2, 0, 3, 7)
    assert box.confirming  # protected from the start, until an hour without any receipt
    assert [e.seq for e in box.pending()] == [1, 2]
    assert box.append(UpKind.EVENT, _event).seq == 3
    box.close()
    assert _rows(path) == {1: None, 2: None, 3: None}
    assert _open(path, Wall()).depth() == 3  # and it opens again, migrated


def test_the_publisher_takes_receipts_for_its_device_only_and_ignores_bad_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace  # noqa: PLC0415

    from agent.publisher import Publisher  # noqa: PLC0415
    from protocol import Receipt, encode  # noqa: PLC0415

    box = _open(tmp_path / "o.sqlite3", Wall())
    link = SimpleNamespace(connections=0, on_receipt=None)
    publisher = Publisher(box, link, name="p")  # type: ignore[arg-type]
    assert link.on_receipt == publisher.receipt
    seqs = _fill(box, 3)
    with caplog.at_level(logging.WARNING, logger="agent.publisher"):
        publisher.receipt(b"not json")
        publisher.receipt(encode(Receipt(device_id="someone-else", ranges=[(0, 2)])))
    assert box.depth() == 3
    assert len(caplog.records) == 1  # at most one line a minute
    assert "ignoring a receipt" in caplog.records[0].message
    publisher.receipt(encode(Receipt(device_id=DEV, ranges=[(seqs[0], seqs[1])])))
    assert (box.depth(), publisher.receipts) == (1, 1)
