"""Ingest counters, exposed at ``/api/v1/ingest/stats`` and logged periodically."""

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
    batches: int = 0
    last_batch_size: int = 0
    last_batch_latency_ms: float = 0.0  # first message of the batch received → committed
    db_retries: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "malformed": dict(self.malformed),
            "malformed_total": sum(self.malformed.values()),
            "batches": self.batches,
            "last_batch_size": self.last_batch_size,
            "last_batch_latency_ms": round(self.last_batch_latency_ms, 3),
            "db_retries": self.db_retries,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
        }
