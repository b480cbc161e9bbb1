"""Ingest counters, exposed at ``/api/v1/ingest/stats`` and logged periodically.

Every message taken from the broker ends in exactly one of: ``stored``, ``duplicates``,
``malformed[reason]`` (rejected: by the codec, or at write time ``db_rejected`` /
``write_crash``) or ``refused[reason]`` (a revoked or retired device), so
``received == stored + duplicates + malformed_total + refused_total`` once the batches in
flight are done. ``quarantined`` counts, by exception class, the rejected messages that were
also kept in ``quarantined_messages`` because something unexpected went wrong with them.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["IngestStats"]


@dataclass
class IngestStats:
    received: int = 0  # MQTT messages taken from the broker
    stored: int = 0  # new messages committed
    duplicates: int = 0  # (device_id, seq) already stored: redeliveries
    malformed: Counter[str] = field(default_factory=Counter)  # dropped, by reason
    refused: Counter[str] = field(default_factory=Counter)  # from refused devices: revoked, retired
    quarantined: Counter[str] = field(default_factory=Counter)  # kept for inspection, by error class
    quarantine_failed: int = 0  # could not even be kept (logged instead)
    batches: int = 0
    last_batch_size: int = 0
    last_batch_latency_ms: float = 0.0  # first message of the batch received → committed
    db_retries: int = 0
    receipts_sent: int = 0  # delivery receipts published to devices (server/ingest/receipts.py)
    receipts_unsent: int = 0  # dropped: no broker connection at the time (the device resends)
    started_at: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "malformed": dict(self.malformed),
            "malformed_total": sum(self.malformed.values()),
            "refused": dict(self.refused),
            "refused_total": sum(self.refused.values()),
            "quarantined": dict(self.quarantined),
            "quarantined_total": sum(self.quarantined.values()),
            "quarantine_failed": self.quarantine_failed,
            "batches": self.batches,
            "last_batch_size": self.last_batch_size,
            "last_batch_latency_ms": round(self.last_batch_latency_ms, 3),
            "db_retries": self.db_retries,
            "receipts_sent": self.receipts_sent,
            "receipts_unsent": self.receipts_unsent,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
        }
