"""The ingest loop: take messages, decode, write a batch, commit, then acknowledge.

A batch closes at ``batch_size`` messages, ``batch_interval`` seconds after its first one, or
when no message arrived for ``batch_linger`` seconds. The linger matters because messages are
acknowledged only after their batch commits: the broker stops sending once its in-flight window
is full, so waiting out the whole interval for a batch that cannot grow would cap throughput.
A malformed message (``protocol.DecodeError`` / ``TopicError``) is counted by reason, logged
with a truncated payload, acknowledged and dropped; the rest of the batch goes on.

Database errors:
- transient (connection lost, database locked): the batch is retried with backoff and nothing
  is acknowledged meanwhile; the broker keeps the messages.
- the data itself is refused (integrity or data error): the batch is written one message at
  a time and a message the database still refuses is counted as ``db_rejected`` and dropped,
  so one poison message cannot stop ingestion.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError

import protocol
from server.db.types import utcnow
from server.ingest.stats import IngestStats
from server.ingest.writer import BatchOutcome, BatchWriter, Decoded
from server.mqtt import InboundMessage, backoff_delay
from server.settings import IngestSettings

__all__ = ["Consumer"]

logger = logging.getLogger(__name__)

LOGGED_PAYLOAD_BYTES = 200
MAX_DIRECT_ATTEMPTS = 3


def _truncated(payload: bytes) -> str:
    shown = payload[:LOGGED_PAYLOAD_BYTES]
    more = f"…(+{len(payload) - LOGGED_PAYLOAD_BYTES} bytes)" if len(payload) > LOGGED_PAYLOAD_BYTES else ""
    return f"{shown!r}{more}"


class Consumer:
    def __init__(
        self,
        queue: asyncio.Queue[InboundMessage | None],
        ack: Callable[[InboundMessage], None],
        writer: BatchWriter,
        settings: IngestSettings,
        stats: IngestStats,
        *,
        on_commands: Callable[[set[str]], None] | None = None,
    ) -> None:
        self._queue = queue
        self._ack = ack
        self._writer = writer
        self._settings = settings
        self.stats = stats
        self._on_commands = on_commands
        self._stopping = False
        self._last_log = time.monotonic()

    def stop(self) -> None:
        """Finish the current batch (commit + ack) and return from :meth:`run`."""
        self._stopping = True
        self._queue.put_nowait(None)

    async def run(self) -> None:
        while not self._stopping:
            batch = await self._collect()
            if batch:
                await self._process(batch)
            self._maybe_log()
        logger.info("ingest stopped: %s", self.stats.snapshot())

    async def _collect(self) -> list[InboundMessage]:
        first = await self._queue.get()
        if first is None:
            self._stopping = True
            return []
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.batch_interval
        while len(batch) < self._settings.batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    wait = min(remaining, self._settings.batch_linger)
                    item = await asyncio.wait_for(self._queue.get(), wait)
                except TimeoutError:
                    break
            if item is None:
                self._stopping = True
                break
            batch.append(item)
        return batch

    def _decode(self, batch: Sequence[InboundMessage]) -> list[Decoded]:
        decoded: list[Decoded] = []
        for inbound in batch:
            try:
                message = protocol.decode_uplink(inbound.topic, inbound.payload)
            except (protocol.DecodeError, protocol.TopicError) as exc:
                reason = exc.reason if isinstance(exc, protocol.DecodeError) else "bad_topic"
                self.stats.malformed[reason] += 1
                logger.warning(
                    "dropped malformed message on %s (%s): %s; payload %s",
                    inbound.topic,
                    reason,
                    exc,
                    _truncated(inbound.payload),
                )
                continue
            decoded.append(Decoded(message, inbound.received_at))
        return decoded

    async def _process(self, batch: list[InboundMessage]) -> None:
        self.stats.received += len(batch)
        decoded = self._decode(batch)
        outcome = await self._write(decoded) if decoded else BatchOutcome()
        if outcome is None:
            return  # stopping while the database is down: leave unacknowledged for redelivery
        for inbound in batch:
            self._ack(inbound)
        latency = (utcnow() - batch[0].received_at).total_seconds()
        self.stats.stored += outcome.stored
        self.stats.duplicates += outcome.duplicates
        self.stats.batches += 1
        self.stats.last_batch_size = len(batch)
        self.stats.last_batch_latency_ms = latency * 1000
        if outcome.commands and self._on_commands is not None:
            self._on_commands(outcome.commands)
        logger.debug(
            "batch of %d: %d stored, %d duplicates, %.1f ms",
            len(batch),
            outcome.stored,
            outcome.duplicates,
            latency * 1000,
        )

    async def _write(self, decoded: list[Decoded]) -> BatchOutcome | None:
        attempt = 0
        while True:
            try:
                return await self._writer.write(decoded)
            except (IntegrityError, DataError) as exc:
                if attempt + 1 >= MAX_DIRECT_ATTEMPTS or len(decoded) == 1:
                    logger.warning("database refused a batch (%s); writing its messages one by one", exc)
                    return await self._write_singly(decoded)
            except (OperationalError, InterfaceError, OSError) as exc:
                logger.warning("database unavailable (%s); batch of %d kept for retry", exc, len(decoded))
            except SQLAlchemyError as exc:
                if attempt + 1 >= MAX_DIRECT_ATTEMPTS:
                    logger.exception("batch failed %d times; writing its messages one by one", attempt + 1)
                    return await self._write_singly(decoded)
                logger.warning("batch failed (%s); retrying", exc)
            if self._stopping:
                return None
            self.stats.db_retries += 1
            await asyncio.sleep(backoff_delay(attempt, 0.05, self._settings.retry_max))
            attempt += 1

    async def _write_singly(self, decoded: list[Decoded]) -> BatchOutcome | None:
        total = BatchOutcome()
        for item in decoded:
            try:
                outcome: BatchOutcome | None = await self._writer.write([item])
            except (OperationalError, InterfaceError, OSError):
                outcome = await self._write([item])  # the database went away: wait for it
                if outcome is None:
                    return None
            except SQLAlchemyError as exc:
                self.stats.malformed["db_rejected"] += 1
                logger.error("dropped message %s/%d: the database refused it (%s)", *item.key, exc)
                continue
            assert outcome is not None
            total.stored += outcome.stored
            total.duplicates += outcome.duplicates
            total.commands |= outcome.commands
        return total

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if now - self._last_log >= self._settings.stats_log_interval:
            self._last_log = now
            logger.info("ingest stats: %s", self.stats.snapshot())
