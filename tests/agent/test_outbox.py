from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.errors import MessageTooLarge
from agent.outbox import Outbox, read_stats
from protocol import Event, Sample, Status, Telemetry, UpKind, decode_uplink

TS = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DEV = "dev-1"


def _event(seq: int, name: str = "fault.raised") -> Event:
    return Event(device_id=DEV, seq=seq, ts=TS, event=name)


def _telemetry(seq: int) -> Telemetry:
    return Telemetry(device_id=DEV, seq=seq, ts=TS, samples=[Sample(metric="m.x", value=1.0, ts=TS)])


def _status(seq: int, online: bool = True) -> Status:
    return Status(device_id=DEV, seq=seq, ts=TS, online=online)


def _open(tmp_path: Path, max_messages: int = 10_000) -> Outbox:
    return Outbox(tmp_path / "outbox.sqlite3", DEV, max_messages=max_messages)


def test_outbox_assigns_consecutive_seqs_and_stores_the_encoded_message(tmp_path: Path) -> None:
    box = _open(tmp_path)
    first = box.append(UpKind.EVENT, _event)
    second = box.append(UpKind.TELEMETRY, _telemetry)
    assert (first.seq, second.seq) == (0, 1)
    assert first.topic == "fc/v1/d/dev-1/up/event"
    message = decode_uplink(first.topic, first.payload)
    assert isinstance(message, Event)
    assert message.seq == 0
    assert [e.seq for e in box.pending()] == [0, 1]
    assert box.depth() == 2


def test_outbox_seq_persists_across_reopen_and_is_never_reused(tmp_path: Path) -> None:
    box = _open(tmp_path)
    for _ in range(3):
        box.append(UpKind.EVENT, _event)
    for entry in box.pending():
        box.ack(entry.seq)
    assert box.depth() == 0
    box.close()

    reopened = _open(tmp_path)
    entry = reopened.append(UpKind.EVENT, _event)
    assert entry.seq == 3
    assert reopened.reserve_seq() == 4
    assert reopened.append(UpKind.EVENT, _event).seq == 5


def test_outbox_ack_deletes_only_that_message(tmp_path: Path) -> None:
    box = _open(tmp_path)
    for _ in range(3):
        box.append(UpKind.EVENT, _event)
    box.ack(1)
    box.ack(1)  # unknown now: harmless
    assert [e.seq for e in box.pending()] == [0, 2]
    assert box.depth() == 2


def test_outbox_acks_a_batch_in_one_call_and_keeps_the_rest_across_reopen(tmp_path: Path) -> None:
    """What the publisher does after a window of PUBACKs: the acknowledged ones go, every
    unacknowledged message and the seq counter (kept in memory too) survive a restart."""
    box = _open(tmp_path)
    for _ in range(6):
        box.append(UpKind.EVENT, _event)
    box.ack(0, 2, 3, 99)  # 99: unknown, harmless
    assert box.depth() == 3
    assert box.reserve_seq() == 6  # the last will's seq, consumed without a queued message
    box.close()

    reopened = _open(tmp_path)
    assert [e.seq for e in reopened.pending()] == [1, 4, 5]
    assert reopened.depth() == 3
    assert reopened.next_seq() == 7
    assert reopened.append(UpKind.EVENT, _event).seq == 7


def test_outbox_seq_is_not_consumed_by_a_failed_append(tmp_path: Path) -> None:
    box = _open(tmp_path)

    def broken(seq: int) -> Event:
        raise ValueError(f"cannot build message {seq}")

    with pytest.raises(ValueError, match="cannot build message 0"):
        box.append(UpKind.EVENT, broken)
    assert box.next_seq() == 0
    assert box.append(UpKind.EVENT, _event).seq == 0
    box.close()
    assert _open(tmp_path).next_seq() == 1


def test_outbox_pending_survives_reopen_in_seq_order(tmp_path: Path) -> None:
    box = _open(tmp_path)
    for _ in range(5):
        box.append(UpKind.EVENT, _event)
    box.close()
    reopened = _open(tmp_path)
    assert [e.seq for e in reopened.pending()] == [0, 1, 2, 3, 4]
    assert [e.seq for e in reopened.pending(limit=2)] == [0, 1]
    assert reopened.depth() == 5


def test_outbox_bound_drops_oldest_telemetry_only(tmp_path: Path) -> None:
    box = _open(tmp_path, max_messages=10)
    box.append(UpKind.EVENT, _event)  # seq 0
    for _ in range(12):  # seq 1..12
        box.append(UpKind.TELEMETRY, _telemetry)
    kinds = [(e.seq, e.kind) for e in box.pending(100)]
    assert len(kinds) == 10
    assert kinds[0] == (0, UpKind.EVENT)
    assert [seq for seq, kind in kinds if kind is UpKind.TELEMETRY] == list(range(4, 13))
    assert box.dropped_telemetry == 3
    assert box.stats().dropped_telemetry == 3


def test_outbox_bound_never_drops_events_and_warns_when_only_they_remain(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = _open(tmp_path, max_messages=10)
    for _ in range(5):
        box.append(UpKind.TELEMETRY, _telemetry)
    with caplog.at_level(logging.WARNING, logger="agent.outbox"):
        for _ in range(12):
            box.append(UpKind.EVENT, _event)
    pending = box.pending(100)
    assert all(e.kind is UpKind.EVENT for e in pending)
    assert len(pending) == 12  # over the bound: events are kept
    assert box.dropped_telemetry == 5
    assert "never dropped" in caplog.text


def test_outbox_dropped_counter_and_bound_survive_reopen(tmp_path: Path) -> None:
    box = _open(tmp_path, max_messages=10)
    for _ in range(15):
        box.append(UpKind.TELEMETRY, _telemetry)
    box.close()
    reopened = _open(tmp_path, max_messages=10)
    assert reopened.dropped_telemetry == 5
    assert reopened.depth() == 10
    stats = read_stats(tmp_path / "outbox.sqlite3")
    assert stats is not None
    assert (stats.depth, stats.next_seq, stats.oldest_seq) == (10, 15, 5)


def test_outbox_new_status_supersedes_queued_status(tmp_path: Path) -> None:
    box = _open(tmp_path)
    box.append(UpKind.STATUS, _status, retain=True)
    box.append(UpKind.EVENT, _event)
    latest = box.append(UpKind.STATUS, lambda seq: _status(seq, online=False), retain=True)
    pending = box.pending()
    assert [(e.seq, e.kind) for e in pending] == [(1, UpKind.EVENT), (2, UpKind.STATUS)]
    assert pending[-1].retain
    assert latest.seq == 2
    assert box.depth() == 2


def test_outbox_refuses_a_message_over_the_protocol_limit_without_consuming_seq(tmp_path: Path) -> None:
    box = _open(tmp_path)
    with pytest.raises(MessageTooLarge):
        box.append(
            UpKind.EVENT,
            lambda seq: Event(device_id=DEV, seq=seq, ts=TS, event="fault.raised", data={"x": "a" * 300_000}),
        )
    assert box.depth() == 0
    assert box.append(UpKind.EVENT, _event).seq == 0


def test_read_stats_of_missing_outbox_is_none(tmp_path: Path) -> None:
    assert read_stats(tmp_path / "nothing.sqlite3") is None
