"""Ingest: MQTT messages in, idempotent batched writes, acks after commit."""

from server.ingest.consumer import Consumer
from server.ingest.stats import IngestStats
from server.ingest.writer import BatchOutcome, BatchWriter, Decoded, Quarantined, write_batch

__all__ = ["BatchOutcome", "BatchWriter", "Consumer", "Decoded", "IngestStats", "Quarantined", "write_batch"]
