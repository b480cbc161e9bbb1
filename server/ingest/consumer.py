"""The ingest loop: take messages, decode, write a batch, commit, then acknowledge.

A batch closes at ``batch_size`` messages, ``batch_interval`` seconds after its first one, or
when no message arrived for ``batch_linger`` seconds. The linger matters because messages are
acknowledged only after their batch commits: the broker stops sending once its in-flight window
is full, so waiting out the whole interval for a batch that cannot grow would cap throughput.

Every message is acknowledged exactly when it is settled: committed, or rejected with a reason
(counted, logged with a truncated payload), so one message can never stop ingestion:
- malformed (``protocol.DecodeError`` / ``TopicError``): counted by the codec's reason and
  dropped; any other exception from the decoder is a ``decode_crash``, and quarantined.
- from a revoked or retired device (server/ingest/refusals.py): counted as ``refused`` by
  reason, not stored.
- database errors while writing a batch:
  - transient (connection lost, database locked): the batch is retried with backoff and
    nothing is acknowledged meanwhile; the broker keeps the messages.
  - anything else (the database refuses the data, or something unexpected is raised while
    applying it): the batch is written one message at a time, and a message that still fails
    is counted (``db_rejected`` or ``write_crash``), quarantined, and dropped.
After the acknowledgement, ``on_settled`` gets the ``(device_id, seq)`` of every decoded message
of the batch (committed, duplicate, refused or quarantined: all final), for the delivery
receipts (server/ingest/receipts.py). Quarantined messages are kept as received (topic, bytes, error class, reason) in
``quarantined_messages`` (``GET /api/v1/ingest/quarantine``), written before the batch is
acknowledged.

Fault injection, for tests only: ``FLEETCARE_SERVER_CRASH_POINT=after_commit_before_ack`` in the
server's environment makes the process SIGKILL itself right after a batch committed, before any
of it is acknowledged (tests/chaos/test_process_kills.py: the broker redelivers the batch to the
restarted server, which must store nothing twice). Unset, it costs one attribute test a batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError

import protocol
from server.db.types import utcnow
from server.ingest.log_throttle import LogThrottle
from server.ingest.refusals import RefusedDevices
from server.ingest.stats import IngestStats
from server.ingest.writer import BatchOutcome, BatchWriter, Decoded, Quarantined
from server.mqtt import InboundMessage, backoff_delay
from server.settings import IngestSettings

__all__ = ["Consumer"]

logger = logging.getLogger(__name__)

LOGGED_PAYLOAD_BYTES = 200
MAX_DIRECT_ATTEMPTS = 3
MAX_REASON_CHARS = 2000  # of an exception's text kept with a quarantined message

Decoder = Callable[[str, bytes], protocol.UpMessage]
TRANSIENT = (OperationalError, InterfaceError, OSError)  # the database went away: wait for it
CRASH_POINT_ENV = "FLEETCARE_SERVER_CRASH_POINT"
CRASH_AFTER_COMMIT = "after_commit_before_ack"


def _log_key(topic: str) -> str:
    """The device a malformed message claims to come from (its topic), for the log throttle."""
    try:
        return protocol.parse_topic(topic).device_id
    except protocol.TopicError:
        return topic[:128]


def _crash(state: str) -> None:
    """The fault-injection point (module docstring): SIGKILL, so no ``finally`` and no ack runs."""
    os.write(2, f"fleetcare server: crash point {CRASH_AFTER_COMMIT} reached ({state}): SIGKILL\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)


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
        refused: RefusedDevices | None = None,
        decode: Decoder = protocol.decode_uplink,
        on_settled: Callable[[list[tuple[str, int]]], None] | None = None,
    ) -> None:
        self._queue = queue
        self._ack = ack
        self._writer = writer
        self._settings = settings
        self.stats = stats
        self._on_commands = on_commands
        self._refused = refused or RefusedDevices(writer.refused_devices)
        self._decoder = decode
        self._on_settled = on_settled
        self._stopping = False
        self._last_log = time.monotonic()
        self._quarantine: list[Quarantined] = []  # of the batch in hand
        # one line a minute per device: a device sending garbage must not bury the log
        self._malformed_log = LogThrottle(settings.stats_log_interval)
        self._crash_after_commit = os.environ.get(CRASH_POINT_ENV) == CRASH_AFTER_COMMIT

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
                message = self._decoder(inbound.topic, inbound.payload)
            except (protocol.DecodeError, protocol.TopicError) as exc:
                reason = exc.reason if isinstance(exc, protocol.DecodeError) else "bad_topic"
                self.stats.malformed[reason] += 1
                held = self._malformed_log.allow(_log_key(inbound.topic))
                if held is not None:
                    logger.warning(
                        "dropped malformed message on %s (%s): %s; payload %s%s",
                        inbound.topic,
                        reason,
                        exc,
                        _truncated(inbound.payload),
                        f" ({held} more from this device not logged since its last line)" if held else "",
                    )
                continue
            except Exception as exc:  # the decoder's own bug: this message only, never ingestion
                self.stats.malformed["decode_crash"] += 1
                self._keep(inbound.topic, inbound.payload, inbound.received_at, None, exc)
                continue
            decoded.append(Decoded(message, inbound.received_at, inbound.topic, inbound.payload))
        return decoded

    async def _admit(self, decoded: list[Decoded]) -> list[Decoded]:
        """Drop the messages of refused (revoked, retired) devices, counted by reason."""
        refused = await self._refused.current()
        if not refused:
            return decoded
        admitted: list[Decoded] = []
        for item in decoded:
            reason = refused.get(item.message.device_id)
            if reason is None:
                admitted.append(item)
                continue
            self.stats.refused[reason] += 1
            if self._refused.should_log(item.message.device_id):
                logger.warning(
                    "refused messages from %s device %s (first: %s seq %d); logged once a minute",
                    reason,
                    item.message.device_id,
                    item.message.kind,
                    item.message.seq,
                )
        return admitted

    async def _process(self, batch: list[InboundMessage]) -> None:
        self.stats.received += len(batch)
        self._quarantine = []
        settled = self._decode(batch)
        decoded = await self._admit(settled)
        outcome = await self._write(decoded) if decoded else BatchOutcome()
        if outcome is None:
            return  # stopping while the database is down: leave unacknowledged for redelivery
        if self._quarantine and not await self._store_quarantine():
            return  # stopping while the database is down: the same
        if self._crash_after_commit:
            _crash(f"batch of {len(batch)} committed ({outcome.stored} new), not acknowledged")
        for inbound in batch:
            self._ack(inbound)
        if self._on_settled is not None and settled:
            self._on_settled([item.key for item in settled])
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
            except TRANSIENT as exc:
                logger.warning("database unavailable (%s); batch of %d kept for retry", exc, len(decoded))
            except SQLAlchemyError as exc:
                if attempt + 1 >= MAX_DIRECT_ATTEMPTS:
                    logger.exception("batch failed %d times; writing its messages one by one", attempt + 1)
                    return await self._write_singly(decoded)
                logger.warning("batch failed (%s); retrying", exc)
            except Exception as exc:  # a bug met by some message of the batch: find it, keep the rest
                logger.warning("batch of %d failed (%r); writing its messages one by one", len(decoded), exc)
                return await self._write_singly(decoded)
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
            except TRANSIENT:
                outcome = await self._write([item])  # the database went away: wait for it
                if outcome is None:
                    return None
            except SQLAlchemyError as exc:
                self.stats.malformed["db_rejected"] += 1
                self._keep_decoded(item, exc)
                continue
            except Exception as exc:  # unexpected: this message only, never ingestion
                self.stats.malformed["write_crash"] += 1
                self._keep_decoded(item, exc)
                continue
            assert outcome is not None
            total.stored += outcome.stored
            total.duplicates += outcome.duplicates
            total.commands |= outcome.commands
        return total

    # -- quarantine --------------------------------------------------------------------------

    def _keep_decoded(self, item: Decoded, exc: BaseException) -> None:
        payload = item.payload or protocol.encode(item.message)  # built in code: as it would travel
        topic = item.topic or protocol.up_topic(item.message.device_id, protocol.UpKind(item.message.kind))
        seq = item.message.seq if 0 <= item.message.seq <= protocol.MAX_INT else None
        self._keep(topic, payload, item.received_at, seq, exc)

    def _keep(
        self, topic: str, payload: bytes, received_at: datetime, seq: int | None, exc: BaseException
    ) -> None:
        """Set a message aside for :meth:`_store_quarantine`, with the exception that it met."""
        try:
            device_id: str | None = protocol.parse_topic(topic).device_id
        except protocol.TopicError:
            device_id = None
        error = type(exc).__name__
        reason = (str(exc) or error)[:MAX_REASON_CHARS]
        self.stats.quarantined[error] += 1
        logger.error(
            "quarantined message on %s (%s: %s); payload %s",
            topic,
            error,
            reason,
            _truncated(payload),
            exc_info=exc,
        )
        self._quarantine.append(Quarantined(received_at, topic, device_id, seq, payload, error, reason))

    async def _store_quarantine(self) -> bool:
        """Write the batch's quarantined messages; False if stopping while the database is down.
        If the database refuses them, they are only logged: ingestion goes on."""
        attempt = 0
        while True:
            try:
                await self._writer.quarantine(self._quarantine)
                return True
            except TRANSIENT as exc:
                logger.warning("database unavailable (%s); quarantine of the batch kept for retry", exc)
            except Exception:  # the quarantine itself must not become a new way to stop ingestion
                logger.exception("could not quarantine %d messages; they are dropped", len(self._quarantine))
                self.stats.quarantine_failed += len(self._quarantine)
                return True
            if self._stopping:
                return False
            self.stats.db_retries += 1
            await asyncio.sleep(backoff_delay(attempt, 0.05, self._settings.retry_max))
            attempt += 1

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if now - self._last_log >= self._settings.stats_log_interval:
            self._last_log = now
            logger.info("ingest stats: %s", self.stats.snapshot())
