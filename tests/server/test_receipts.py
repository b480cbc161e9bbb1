"""server/ingest/receipts.py: coalesced per device, compact, bounded, never blocking."""

from __future__ import annotations

from protocol import MAX_RECEIPT_RANGES, decode_receipt, receipt_topic
from server.ingest.receipts import ReceiptSender
from server.ingest.stats import IngestStats


class Sent:
    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> bool:
        if self.connected:
            self.messages.append((topic, payload))
        return self.connected


def test_one_receipt_per_device_per_flush_with_the_seqs_as_ranges() -> None:
    sent, stats = Sent(), IngestStats()
    receipts = ReceiptSender(sent, 0.5, stats)
    receipts.add([("a", 3), ("b", 7), ("a", 1), ("a", 2)])
    receipts.add([("a", 5), ("a", 3)])  # a redelivery is confirmed again: harmless
    assert receipts.flush() == 2
    by_topic = {topic: decode_receipt(payload) for topic, payload in sent.messages}
    assert by_topic[receipt_topic("a")].ranges == [(1, 3), (5, 5)]
    assert by_topic[receipt_topic("b")].ranges == [(7, 7)]
    assert receipts.flush() == 0  # nothing new
    assert stats.receipts_sent == 2


def test_more_ranges_than_a_receipt_holds_go_in_several() -> None:
    sent, stats = Sent(), IngestStats()
    receipts = ReceiptSender(sent, 0.5, stats)
    receipts.add(("a", 2 * n) for n in range(MAX_RECEIPT_RANGES + 5))  # no two consecutive
    assert receipts.flush() == 2
    sizes = [len(decode_receipt(payload).ranges) for _, payload in sent.messages]
    assert sizes == [MAX_RECEIPT_RANGES, 5]


def test_without_a_broker_connection_receipts_are_dropped_and_counted() -> None:
    sent, stats = Sent(connected=False), IngestStats()
    receipts = ReceiptSender(sent, 0.5, stats)
    receipts.add([("a", 1), ("b", 2)])
    assert receipts.flush() == 0
    assert (stats.receipts_sent, stats.receipts_unsent) == (0, 2)
    sent.connected = True
    assert receipts.flush() == 0  # not kept: the agents publish again, dedup absorbs it
