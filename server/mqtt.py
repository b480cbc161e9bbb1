"""The server's own broker connection: mutual TLS, persistent session, ack after commit.

- Identity: the server client certificate (CN ``fleetcare-server``), fixed client id and
  ``clean_session=False``, so the broker queues device messages while the server is down.
- Subscriptions live apart from the connection and are replayed on every (re)connect.
- Reconnect with full-jitter exponential backoff, reset after a successful connection.
- Ack after commit: paho acknowledges QoS 1 on receipt by default, which loses a message if
  the server dies before its database commit. We switch paho to manual acks and acknowledge a
  message only when :meth:`MqttLink.ack` is called, after the batch holding it was committed.
  aiomqtt 2.5 does not expose this, so this module (and only this one) reaches the underlying
  paho client (``client._client``). An ack for a message from an earlier connection is dropped:
  the broker redelivers it on the new one and the idempotent writer stores it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from datetime import datetime

import aiomqtt
import paho.mqtt.client as paho

import protocol
from server.db.types import utcnow
from server.errors import Unavailable
from server.settings import MqttSettings
from transport.backoff import backoff_delay
from transport.sockets import NO_DELAY

__all__ = ["InboundMessage", "MqttLink", "backoff_delay"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    qos: int
    mid: int
    epoch: int  # which connection delivered it: acks only go back on that one
    received_at: datetime


class MqttLink:
    """Owns the connection. Run :meth:`run` in a task; :meth:`close` disconnects gracefully."""

    def __init__(self, settings: MqttSettings) -> None:
        self._settings = settings
        self.subscription = protocol.server_subscription(settings.shared_group)
        self.messages: asyncio.Queue[InboundMessage | None] = asyncio.Queue()
        self._client: aiomqtt.Client | None = None
        self._epoch = 0
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def _new_client(self) -> aiomqtt.Client:
        s = self._settings
        client = aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id,
            clean_session=False,
            socket_options=NO_DELAY,
            keepalive=s.keepalive,
            timeout=s.publish_timeout,
            tls_params=aiomqtt.TLSParameters(
                ca_certs=str(s.ca_file),
                certfile=str(s.cert_file),
                keyfile=str(s.key_file),
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            ),
        )
        # Ack after commit (see the module docstring): the one place we touch paho directly.
        client._client.manual_ack_set(True)
        return client

    async def run(self) -> None:
        """Connect, subscribe, read; reconnect with backoff until :meth:`close`."""
        s = self._settings
        attempt = 0
        while not self._stopping.is_set():
            try:
                await self._session()
                attempt = 0
            except aiomqtt.MqttError as exc:
                level = logging.WARNING if attempt < 3 else logging.ERROR
                logger.log(level, "MQTT connection to %s:%d failed or lost: %s", s.host, s.port, exc)
            if self._stopping.is_set():
                break
            delay = backoff_delay(attempt, s.reconnect_min, s.reconnect_max)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _session(self) -> None:
        client = self._new_client()
        async with client:
            self._client = client
            self._epoch += 1
            self.connects += 1
            try:
                await client.subscribe(self.subscription, qos=1)
                self._connected.set()
                logger.info(
                    "connected to MQTT %s:%d as %s, subscribed to %s",
                    self._settings.host,
                    self._settings.port,
                    self._settings.client_id,
                    self.subscription,
                )
                reader = asyncio.create_task(self._read(client, self._epoch), name="server.mqtt.read")
                stopper = asyncio.create_task(self._stopping.wait(), name="server.mqtt.stop")
                try:
                    await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (reader, stopper):
                        task.cancel()
                    await asyncio.gather(reader, stopper, return_exceptions=True)
                if reader.done() and not reader.cancelled() and (exc := reader.exception()) is not None:
                    raise exc
            finally:
                self._connected.clear()
                self._client = None

    async def _read(self, client: aiomqtt.Client, epoch: int) -> None:
        async for message in client.messages:
            payload = message.payload
            self.messages.put_nowait(
                InboundMessage(
                    topic=message.topic.value,
                    payload=payload if isinstance(payload, bytes) else str(payload).encode(),
                    qos=message.qos,
                    mid=message.mid,
                    epoch=epoch,
                    received_at=utcnow(),
                )
            )

    def ack(self, message: InboundMessage) -> None:
        """Acknowledge a committed message (PUBACK), if its connection is still the live one."""
        client = self._client
        if message.qos == 0 or client is None or message.epoch != self._epoch:
            return
        rc = client._client.ack(message.mid, message.qos)  # see the module docstring
        if rc != paho.MQTT_ERR_SUCCESS:
            logger.debug("ack of mid %d not sent (rc=%s); the broker will redeliver", message.mid, rc)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish QoS 1 and wait for the broker's PUBACK; :class:`Unavailable` otherwise."""
        client = self._client
        if client is None or not self.connected:
            raise Unavailable("not connected to the MQTT broker")
        try:
            await client.publish(topic, payload, qos=1, timeout=self._settings.publish_timeout)
        except aiomqtt.MqttError as exc:
            raise Unavailable(f"publish to {topic} failed: {exc}") from exc

    def publish_nowait(self, topic: str, payload: bytes) -> bool:
        """Publish QoS 0 without waiting (the delivery receipts: a lost one only causes a
        resend); False when not connected. Straight to paho (see the module docstring): nothing
        to await, no task per message."""
        client = self._client
        if client is None or not self.connected:
            return False
        info = client._client.publish(topic, payload, qos=0)
        return info.rc == paho.MQTT_ERR_SUCCESS

    async def close(self) -> None:
        """Stop reconnecting and disconnect (after the caller has sent its last acks)."""
        self._stopping.set()
