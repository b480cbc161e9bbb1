"""Draining the outbox to the broker, in seq order, whenever the link is connected.

Woken by new messages (:meth:`Publisher.notify`) and by reconnections, never by a polling
sleep. Up to :data:`agent.link.PUBLISH_WINDOW` QoS 1 publishes are in flight at once (handed to
the connection in seq order); each message is deleted from the outbox only once the broker
acknowledged it. When a publish fails, the rest stay queued and the publisher waits for the
next connection.

Receipts (protocol.Receipt, on ``.../down/receipt``): the publisher takes the link's receipts
(:meth:`Publisher.receipt`, set as ``link.on_receipt``) and deletes the confirmed messages
(agent/outbox.py). At every new connection, before publishing anything, the messages the broker
acknowledged but the server has not confirmed go back in the queue (:meth:`Outbox.requeue`):
they are published again first, in seq order, so the server sees each device's messages in the
order they were made, and a retained snapshot resent is never older than one sent after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from agent.errors import LinkError, OutboxError
from agent.link import PUBLISH_WINDOW, MqttLink
from agent.outbox import Outbox, OutboxEntry
from protocol import DecodeError, decode_receipt

__all__ = ["Publisher"]

logger = logging.getLogger(__name__)

BAD_RECEIPT_LOG_INTERVAL = 60.0  # seconds between log lines about receipts that cannot be used


class Publisher:
    def __init__(self, outbox: Outbox, link: MqttLink, *, name: str, window: int = PUBLISH_WINDOW) -> None:
        self.outbox = outbox
        self.link = link
        self.name = name
        self.window = window
        self._wakeup = asyncio.Event()  # something new in the outbox
        self._empty = asyncio.Event()  # the outbox was seen empty
        self._acked = asyncio.Event()  # some messages were acknowledged
        self._connection = link.connections  # the connection whose unconfirmed ones are requeued
        self._bad_receipt_logged = -BAD_RECEIPT_LOG_INTERVAL
        self.receipts = 0  # receipts taken
        self.requeued = 0  # messages published again after a reconnection
        link.on_receipt = self.receipt

    def notify(self) -> None:
        """A message was queued."""
        self._empty.clear()
        self._wakeup.set()

    async def drained(self) -> None:
        """Until the outbox is empty: everything queued so far was acknowledged."""
        while self.outbox.depth() > 0:
            self._empty.clear()
            await self._empty.wait()

    def receipt(self, payload: bytes) -> None:
        """The link received a receipt: forget what it confirms. A receipt that cannot be used
        is logged (at most once a minute) and ignored: the messages are simply sent again."""
        try:
            receipt = decode_receipt(payload)
            if receipt.device_id != self.outbox.device_id:
                raise ValueError(f"it is for device {receipt.device_id!r}")
            self.outbox.confirm(receipt.ranges)
        except (DecodeError, ValueError, OutboxError) as exc:
            now = time.monotonic()
            if now - self._bad_receipt_logged >= BAD_RECEIPT_LOG_INTERVAL:
                self._bad_receipt_logged = now
                logger.warning("%s: ignoring a receipt: %s", self.name, exc)
            return
        self.receipts += 1

    async def below(self, depth: int) -> None:
        """Until fewer than ``depth`` messages are queued (back-pressure for streaming output:
        it waits for the broker to acknowledge, so a long stream cannot swell the outbox)."""
        while self.outbox.depth() >= depth:
            self._acked.clear()
            await self._acked.wait()

    async def run(self) -> None:
        while True:
            try:
                await self.link.wait_connected()
            except LinkError:
                return  # the link stopped or failed; its own task reports why
            self._wakeup.clear()
            if self.link.connections != self._connection:
                self._connection = self.link.connections
                requeued = self.outbox.requeue()
                if requeued:
                    self.requeued += requeued
                    logger.info("%s: publishing %d unconfirmed message(s) again", self.name, requeued)
            # depth() is kept in memory (one writer): an empty outbox costs no query.
            batch = self.outbox.pending(self.window) if self.outbox.depth() else []
            if not batch:
                self._empty.set()
                await self._wakeup.wait()
                continue
            if not await self._publish(batch):
                await self.link.wait_disconnected()  # the failed publish aborted the connection

    async def _publish(self, batch: Sequence[OutboxEntry]) -> bool:
        results: list[BaseException | None]
        if len(batch) == 1:  # the usual case (one message per telemetry period): no gather task
            entry = batch[0]
            try:
                await self.link.publish(entry.topic, entry.payload, qos=1, retain=entry.retain)
                results = [None]
            except LinkError as exc:
                results = [exc]
        else:
            results = await asyncio.gather(
                *(self.link.publish(e.topic, e.payload, qos=1, retain=e.retain) for e in batch),
                return_exceptions=True,
            )
        ok = True
        acked: list[int] = []
        for entry, result in zip(batch, results, strict=True):
            if result is None:
                acked.append(entry.seq)
            elif isinstance(result, LinkError):
                ok = False
            elif isinstance(result, BaseException):
                self.outbox.ack(*acked)
                raise result
        if acked:
            self.outbox.ack(*acked)  # one transaction for the batch
            self._acked.set()
        if not ok:
            logger.info(
                "%s: publishing interrupted; %d message(s) stay queued", self.name, self.outbox.depth()
            )
        elif self.outbox.depth() == 0:
            self._empty.set()
        return ok
