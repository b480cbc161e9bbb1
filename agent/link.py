"""The MQTT connection of one device: mutual TLS, last will, birth, reconnect with backoff.

One :class:`MqttLink` runs for the agent's lifetime (:meth:`MqttLink.run`). Each connection:

* a fresh TLS context from the files (fleet CA, client certificate, TLS >= 1.2, hostname
  checked against the broker certificate); client id = device id; ``clean_session=False`` so
  QoS 1 commands sent while the device was offline are delivered when it comes back;
* last will: retained ``Status(online=False)`` on ``.../up/status``, QoS 1, with a seq taken
  from the outbox counter and ``ts`` = connect time (the ``will`` factory builds it);
* after CONNACK: subscribe to ``.../down/cmd`` (QoS 1) and ``.../down/receipt`` (QoS 0: a lost
  receipt only means a resend) — on *every* connection, the wanted subscriptions live here, not
  in the broker's memory — then ``on_connected()`` (the runtime queues its birth Status), then
  received commands go to the ``keep`` callback (or, without one, to :attr:`MqttLink.incoming`)
  and receipts to :attr:`MqttLink.on_receipt` (the publisher's, agent/publisher.py).

Acknowledgements are manual (paho's ``manual_ack``): a command's PUBACK is sent only once
``keep(payload, redelivered)`` returned — the runtime commits it to its inbox there
(agent/inbox.py) — so a command is never acknowledged and then lost with the process. If
``keep`` raises, the command is not acknowledged and the connection is dropped: the broker
redelivers it (DUP set, ``redelivered=True``) after the reconnect.

State is one :class:`LinkState`, awaitable through :meth:`wait_connected` / :meth:`wait_for`.

Reconnect: full-jitter exponential backoff (:mod:`transport.backoff`), capped; reset only after a
connection that stayed up ``reconnect.stable_after`` seconds, so a flapping link keeps backing
off. Non-retryable refusals — the broker rejects this certificate (bad, revoked, expired,
unknown CA), we reject the broker's certificate, or CONNACK says not authorised / bad identity
— raise :class:`FatalLinkError`: with ``reconnect.on_fatal = "stop"`` (default) the link stops
and the agent exits (status 3); with ``"retry"`` it retries at the maximum backoff, logging an
error each time. Security is never weakened to get through: no TLS fallback, no skipped checks.

:meth:`publish` races the PUBACK against the loss of the connection, so a dead link fails fast
instead of waiting for a timeout; a publish that times out aborts the connection (reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import AgentSettings
from agent.crashpoints import crash_point
from agent.errors import AgentError, FatalLinkError, LinkDown, LinkError
from agent.tls import LinkSSLContext, is_identity_refusal, make_ssl_context
from protocol import UpKind, command_topic, receipt_topic, up_topic
from transport.backoff import Backoff
from transport.sockets import NO_DELAY

__all__ = ["PUBLISH_WINDOW", "LinkState", "MqttLink"]

logger = logging.getLogger(__name__)

# CONNACK codes that reject the identity itself (MQTT 3.1.1 values and their MQTT 5 forms).
_FATAL_CONNACK = frozenset({2, 4, 5, 133, 134, 135, 138, 140})


PUBLISH_WINDOW = 20
"""QoS 1 publishes the runtime keeps in flight at once (paho's default inflight limit)."""

HOUSEKEEPING_INTERVAL = 1.0
"""Seconds between paho's housekeeping calls (``loop_misc``: keepalive PINGREQ, ping timeout),
as aiomqtt does."""


class _Housekeeping:
    """One timer per event loop runs paho's housekeeping for every connection of that loop.

    aiomqtt gives each connection a task that wakes every second to call ``loop_misc()``: in a
    process running thousands of simulated agents that is thousands of task wake-ups a second,
    more CPU than their publishing (benchmarks/fleet_scale.py). Here a connection registers its
    paho client and waits on a future; one timer callback (no task) ticks them all and is
    cancelled when the last connection leaves.
    """

    def __init__(self) -> None:  # no reference to the loop: it is the weak key of its keeper
        self._clients: dict[mqtt.Client, asyncio.Future[None]] = {}
        self._timer: asyncio.Handle | None = None

    def __len__(self) -> int:
        return len(self._clients)

    async def serve(self, client: mqtt.Client) -> None:
        """Until ``client.loop_misc()`` reports the connection gone (or cancelled)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._clients[client] = done
        if self._timer is None:
            self._timer = loop.call_soon(self._tick, loop)
        try:
            await done
        finally:
            self._clients.pop(client, None)
            if not self._clients and self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        for client, done in list(self._clients.items()):
            if done.done():
                continue
            try:
                rc = client.loop_misc()
            except Exception as exc:  # handed to the connection's own task, never lost
                done.set_exception(exc)
                continue
            if rc != mqtt.MQTT_ERR_SUCCESS:
                done.set_result(None)
        self._timer = loop.call_later(HOUSEKEEPING_INTERVAL, self._tick, loop)


_housekeeping: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Housekeeping] = (
    weakref.WeakKeyDictionary()
)


def housekeeping() -> _Housekeeping:
    """This event loop's shared housekeeping (created on first use)."""
    loop = asyncio.get_running_loop()
    keeper = _housekeeping.get(loop)
    if keeper is None:
        keeper = _housekeeping[loop] = _Housekeeping()
    return keeper


class _Client(aiomqtt.Client):
    """aiomqtt's client, cheaper per connection and per message, for processes that hold
    thousands, and acknowledging commands only once they are stored (aiomqtt's private hooks,
    2.x; tests/agent/test_link.py and tests/agent/test_inbox_link.py check they exist):

    - ``_misc_loop``: the per-connection housekeeping task is replaced by the shared timer;
    - ``_on_socket_register_write``: paho asks for "tell me when the socket is writable" for
      every packet it queues, and aiomqtt answers with ``call_soon_threadsafe(add_writer)``: a
      self-pipe write, two epoll_ctl calls and an extra loop iteration per publish. On the
      loop's own thread the packet is written at once instead (the socket is almost always
      writable); only what does not fit waits for writability as before. paho's connect, in an
      executor thread, still goes through aiomqtt's path;
    - ``_client`` (the paho client): ``manual_ack_set(True)`` so paho sends no PUBACK on its
      own, and :meth:`ack` sends it (aiomqtt 2.x has no manual acknowledgement of its own);
    - ``_on_message``: notes the DUP flag, which aiomqtt's Message does not carry, in
      :attr:`redelivered` (message ids, until acknowledged).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client.manual_ack_set(True)
        self.redelivered: set[int] = set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.dup:
            self.redelivered.add(message.mid)
        super()._on_message(client, userdata, message)

    def ack(self, message: aiomqtt.Message) -> None:
        """Send the PUBACK of ``message`` (nothing for QoS 0). In order: MQTT 3.1.1 wants
        PUBACKs in the order the PUBLISHes came, and the pump handles them one by one."""
        self.redelivered.discard(message.mid)
        self._client.ack(message.mid, message.qos)

    async def _misc_loop(self) -> None:
        await housekeeping().serve(self._client)

    def _on_socket_register_write(self, client: mqtt.Client, userdata: object, sock: object) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # paho's connect, in an executor thread
            on_loop = False
        if not on_loop:
            super()._on_socket_register_write(client, userdata, sock)
            return
        try:
            client.loop_write()
        except Exception as exc:  # as aiomqtt's writer callback: the connection is broken
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)
            return
        if client.want_write():  # the rest once the socket is writable (paho thinks it asked)
            super()._on_socket_register_write(client, userdata, sock)


def _retrieve_disconnect_error(client: aiomqtt.Client) -> None:
    """Mark aiomqtt's disconnect error as seen. A connection that drops while nobody iterates
    the messages (e.g. during SUBSCRIBE) otherwise ends in asyncio's "Future exception was
    never retrieved" log. aiomqtt offers no public accessor: the one private access here."""
    disconnected = getattr(client, "_disconnected", None)
    if isinstance(disconnected, asyncio.Future) and disconnected.done() and not disconnected.cancelled():
        disconnected.exception()


class LinkState(StrEnum):
    IDLE = "idle"  # run() not started
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"  # waiting before the next attempt
    FAILED = "failed"  # stopped on a FatalLinkError
    STOPPED = "stopped"  # run() ended (cancelled)


@dataclass(eq=False)
class _Connection:
    client: _Client
    since: float = field(default_factory=time.monotonic)
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # the session is over
    lost: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    """Done when the session is over: what each publish races against (a future, not a task
    per publish)."""
    abort: asyncio.Event = field(default_factory=asyncio.Event)  # tear it down and reconnect


class MqttLink:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        will: Callable[[], bytes],
        on_connected: Callable[[], None],
        name: str | None = None,
        keep: Callable[[bytes, bool], None] | None = None,
    ) -> None:
        """``keep(payload, redelivered)`` takes charge of each received command before its
        PUBACK (stores and queues it; raises :class:`AgentError` if it cannot). Without it,
        commands are acknowledged on receipt and queued in :attr:`incoming`."""
        self.settings = settings
        self.device_id = settings.device_id
        self.name = name or f"agent[{settings.device_id}].link"
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        """Received commands, when there is no ``keep`` callback (and for tests to inject)."""
        self.status_topic = up_topic(settings.device_id, UpKind.STATUS)
        self.command_topic = command_topic(settings.device_id)
        self.receipt_topic = receipt_topic(settings.device_id)
        self.on_receipt: Callable[[bytes], None] | None = None
        """Takes each received receipt's payload (set by the publisher); None: ignored."""
        self.connections = 0  # successful connections so far
        self._will = will
        self._on_connected = on_connected
        self._keep = keep
        self._state = LinkState.IDLE
        self._changed = asyncio.Event()
        self._failure: FatalLinkError | None = None
        self._conn: _Connection | None = None
        self._mqtt_logger = logging.getLogger("agent.mqtt")

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def failure(self) -> FatalLinkError | None:
        return self._failure

    def _set_state(self, state: LinkState) -> None:
        if state is self._state:
            return
        logger.debug("%s: %s -> %s", self.name, self._state.value, state.value)
        self._state = state
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(self, *states: LinkState) -> LinkState:
        """Until the state is one of ``states``; raises the FatalLinkError if the link failed."""
        while self._state not in states:
            if self._state is LinkState.FAILED and self._failure is not None:
                raise self._failure
            if self._state is LinkState.STOPPED:
                raise LinkDown(f"{self.name} is stopped")
            await self._changed.wait()
        return self._state

    async def wait_connected(self) -> None:
        await self.wait_for(LinkState.CONNECTED)

    async def wait_disconnected(self) -> None:
        while self._state is LinkState.CONNECTED:
            await self._changed.wait()

    # -- main loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect — until cancelled or a fatal refusal with on_fatal=stop."""
        rc = self.settings.reconnect
        backoff = Backoff(rc.initial, rc.max)
        if self.settings.tls is None:
            logger.warning("%s: connecting WITHOUT TLS (broker.allow_plaintext): simulation only", self.name)
        try:
            while True:
                self._set_state(LinkState.CONNECTING)
                try:
                    lasted = await self._session()
                except FatalLinkError as exc:
                    if rc.on_fatal == "stop":
                        logger.error("%s: %s; stopping (reconnect.on_fatal = stop)", self.name, exc)
                        self._failure = exc
                        self._set_state(LinkState.FAILED)
                        raise
                    delay = rc.max
                    logger.error(
                        "%s: %s; retrying in %.0fs (reconnect.on_fatal = retry)", self.name, exc, delay
                    )
                except LinkError as exc:
                    delay = backoff.next_delay()
                    logger.warning("%s: %s; retrying in %.1fs", self.name, exc, delay)
                else:
                    if lasted >= rc.stable_after:
                        backoff.reset()
                    delay = backoff.next_delay()
                    logger.warning(
                        "%s: connection lost after %.1fs; reconnecting in %.1fs", self.name, lasted, delay
                    )
                self._set_state(LinkState.BACKING_OFF)
                await asyncio.sleep(delay)
        finally:
            if self._state is not LinkState.FAILED:
                self._set_state(LinkState.STOPPED)

    async def _session(self) -> float:
        """One connection: returns how long it lasted once it ends; raises if it never started."""
        ctx: LinkSSLContext | None = None
        if self.settings.tls is not None:
            try:
                ctx = await asyncio.to_thread(make_ssl_context, self.settings.tls)
            except (OSError, ssl.SSLError) as exc:
                raise FatalLinkError(self.device_id, f"cannot load the TLS files: {exc}") from exc
        broker = self.settings.broker
        client = _Client(
            broker.host,
            broker.port,
            identifier=self.device_id,
            clean_session=False,
            socket_options=NO_DELAY,
            keepalive=broker.keepalive,
            will=aiomqtt.Will(self.status_topic, self._will(), qos=1, retain=True),
            tls_context=ctx,
            timeout=broker.connect_timeout,
            logger=self._mqtt_logger,
        )
        client.pending_calls_threshold = 4 * PUBLISH_WINDOW  # we pipeline on purpose
        await self._connect(client, ctx)
        conn = _Connection(client)
        try:
            await self._subscribe(client)
            self._conn = conn
            self.connections += 1
            self._set_state(LinkState.CONNECTED)
            logger.info("%s: connected to %s:%d", self.name, broker.host, broker.port)
            self._on_connected()
            await self._serve(conn)
        finally:
            self._conn = None
            conn.closed.set()
            if not conn.lost.done():
                conn.lost.set_result(None)
            if self._state is LinkState.CONNECTED:
                self._set_state(LinkState.CONNECTING)
            # Graceful DISCONNECT (no will) when we leave on purpose; returns at once if the
            # connection is already gone. A dead peer costs at most connect_timeout.
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            _retrieve_disconnect_error(client)
        return time.monotonic() - conn.since

    async def _connect(self, client: aiomqtt.Client, ctx: LinkSSLContext | None) -> None:
        """CONNECT and wait for CONNACK. Cancelled half-way (the agent stops), the attempt is
        allowed to finish and then closed: no half-open zombie connection is left behind."""
        attempt = asyncio.ensure_future(client.__aenter__())
        try:
            await asyncio.shield(attempt)
        except asyncio.CancelledError:
            done, _ = await asyncio.wait({attempt}, timeout=self.settings.broker.connect_timeout + 1)
            if not done:
                attempt.cancel()
            elif attempt.exception() is None:
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.__aexit__(None, None, None)
            raise
        except aiomqtt.MqttError as exc:
            raise self._translate(exc, ctx) from exc

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        try:
            granted = await client.subscribe([(self.command_topic, 1), (self.receipt_topic, 0)])
        except aiomqtt.MqttError as exc:
            raise LinkError(f"subscribing to {self.command_topic} failed: {exc}") from exc
        codes = [g.value if isinstance(g, ReasonCode) else int(g) for g in granted]
        if len(codes) > 1 and codes[1] >= 0x80:
            logger.warning(
                "%s: the broker refused the subscription to %s: the server's receipts will not "
                "arrive (messages are then forgotten on the broker's acknowledgement)",
                self.name,
                self.receipt_topic,
            )
        if codes and codes[0] >= 0x80:
            # Telemetry and events still flow; commands cannot arrive. Loud, not fatal.
            logger.error(
                "%s: the broker refused the subscription to %s (ACL?): commands will not arrive",
                self.name,
                self.command_topic,
            )

    async def _serve(self, conn: _Connection) -> None:
        """Pump commands into :attr:`incoming` until the connection is lost or aborted."""

        client = conn.client

        async def pump() -> None:
            async for message in client.messages:
                payload = message.payload
                if message.topic.value == self.receipt_topic and isinstance(payload, bytes):
                    client.ack(message)  # QoS 0: nothing is sent
                    if self.on_receipt is not None:
                        self.on_receipt(payload)
                    continue
                if message.topic.value != self.command_topic or not isinstance(payload, bytes):
                    logger.warning("%s: ignoring a message on %s", self.name, message.topic.value)
                    client.ack(message)
                    continue
                if self._keep is None:
                    client.ack(message)
                    self.incoming.put_nowait(payload)
                    continue
                try:
                    self._keep(payload, message.mid in client.redelivered)
                except AgentError as exc:
                    logger.error(
                        "%s: cannot store a received command, not acknowledging it; reconnecting "
                        "so the broker delivers it again: %s",
                        self.name,
                        exc,
                    )
                    return
                crash_point("before_ack")
                client.ack(message)

        reader = asyncio.create_task(pump(), name=f"{self.name}.reader")
        aborted = asyncio.create_task(conn.abort.wait(), name=f"{self.name}.abort")
        try:
            await asyncio.wait({reader, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, aborted):
                task.cancel()
            results = await asyncio.gather(reader, aborted, return_exceptions=True)
        error = results[0]
        if isinstance(error, aiomqtt.MqttError):
            cause = error.__cause__ or error
            logger.info("%s: connection lost: %s", self.name, cause)
        elif conn.abort.is_set():
            logger.warning("%s: connection aborted after a failed publish", self.name)

    def _translate(self, exc: aiomqtt.MqttError, ctx: LinkSSLContext | None) -> LinkError:
        where = f"{self.settings.broker.host}:{self.settings.broker.port}"
        if isinstance(exc, MqttConnectError):
            code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
            if code in _FATAL_CONNACK:
                return FatalLinkError(self.device_id, f"broker {where} refused the identity: {exc}")
            return LinkError(f"broker {where} refused the connection: {exc}")
        # aiomqtt raises `from None`; the TLS error is still the context, or (TLS 1.3, refused
        # client certificate) only seen by the socket, recorded in the context.
        tls_error = exc.__context__ if isinstance(exc.__context__, ssl.SSLError) else None
        if tls_error is None and ctx is not None:
            tls_error = ctx.last_error
        if is_identity_refusal(tls_error):
            if isinstance(tls_error, ssl.SSLCertVerificationError):
                why = f"the broker's certificate does not verify against the fleet CA: {getattr(tls_error, 'verify_message', None) or tls_error}"
            else:
                why = f"the broker refused this device's certificate ({getattr(tls_error, 'reason', tls_error)})"
            return FatalLinkError(self.device_id, f"{where}: {why}")
        return LinkError(f"cannot connect to {where}: {exc}")

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait for the broker's acknowledgement (QoS 1: PUBACK).

        Raises :class:`LinkDown` if there is no connection or it is lost first.
        """
        conn = self._conn
        if conn is None or conn.closed.is_set():
            raise LinkDown("not connected")
        sent = asyncio.ensure_future(conn.client.publish(topic, payload, qos=qos, retain=retain))
        try:
            await asyncio.wait({sent, conn.lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sent.done():
                sent.cancel()
                await asyncio.gather(sent, return_exceptions=True)
        if sent.cancelled():
            raise LinkDown("connection lost before the broker acknowledged the publish")
        error = sent.exception()
        if error is not None:
            conn.abort.set()
            raise LinkDown(f"publish to {topic} failed: {error}") from error
