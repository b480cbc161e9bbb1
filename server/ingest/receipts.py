"""Delivery receipts: tell each device which of its seqs the server has handled for good.

The broker acknowledges a device's publish on receipt and may lose it before delivering it to
the server (a ``kill -9`` before its next save). So the agent keeps every message it published
until the server confirms it (agent/outbox.py) and publishes the unconfirmed ones again after a
reconnection; dedup on ``(device_id, seq)`` absorbs the copies that were not lost.

The consumer hands over the keys of every message of a batch once the batch is settled —
committed, a duplicate, refused or quarantined, all final — right after acknowledging it
(:meth:`ReceiptSender.add`: a list append, nothing awaited: ingestion never waits for a
receipt). Every ``receipt_interval`` seconds :meth:`ReceiptSender.flush` sends one receipt per
device with something to confirm (more only above ``MAX_RECEIPT_RANGES`` ranges), QoS 0 on
``fc/v1/d/{id}/down/receipt``: a lost receipt only causes a resend, absorbed by dedup. While the
broker is unreachable the pending receipts are dropped for the same reason (counted).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

from protocol import MAX_RECEIPT_RANGES, Receipt, encode, receipt_topic, seq_ranges
from server.ingest.stats import IngestStats

__all__ = ["ReceiptSender"]

logger = logging.getLogger(__name__)

Publish = Callable[[str, bytes], bool]
"""Send without waiting, QoS 0; False if there is no connection (server/mqtt.py)."""


class ReceiptSender:
    def __init__(self, publish: Publish, interval: float, stats: IngestStats) -> None:
        self._publish = publish
        self.interval = interval
        self._stats = stats
        self._pending: defaultdict[str, list[int]] = defaultdict(list)

    def add(self, keys: Iterable[tuple[str, int]]) -> None:
        """Seqs to confirm (``(device_id, seq)``), sent with the next :meth:`flush`."""
        pending = self._pending
        for device_id, seq in keys:
            pending[device_id].append(seq)

    def flush(self) -> int:
        """Send what is pending, one receipt per device; returns how many were sent."""
        if not self._pending:
            return 0
        pending, self._pending = self._pending, defaultdict(list)
        sent = 0
        for device_id, seqs in pending.items():
            ranges = seq_ranges(seqs)
            topic = receipt_topic(device_id)
            for start in range(0, len(ranges), MAX_RECEIPT_RANGES):
                receipt = Receipt(device_id=device_id, ranges=ranges[start : start + MAX_RECEIPT_RANGES])
                if self._publish(topic, encode(receipt)):
                    sent += 1
                else:
                    self._stats.receipts_unsent += 1
        self._stats.receipts_sent += sent
        return sent

    async def run(self) -> None:
        """Flush every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.flush()
            except Exception:  # a receipt is an optimisation of resending: never stop for one
                logger.exception("could not send receipts; the agents will publish again")
