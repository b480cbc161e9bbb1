"""The pure-Python fallback: amqtt 0.12, in-process, with the fleet's mutual-TLS identity and ACL.

amqtt gives us three things to bend:

* its listener SSL context asks for a client certificate but does not require one
  (``CERT_OPTIONAL``): :class:`_FleetBroker` builds its own context, ``CERT_REQUIRED`` against
  the fleet CA, TLS >= 1.2, revocation list checked;
* authentication happens in plugins: :class:`CertificateIdentityAuthPlugin` makes the peer
  certificate's CN the username (refusing a connection without one, or whose will topic the
  identity may not publish to, as Mosquitto does);
* topic checks happen in plugins too: :class:`FleetAclTopicPlugin` applies :class:`FleetAcl`
  on publish, subscribe *and* delivery.

amqtt 0.12 takes the client id from the CONNECT, so any certificate could take over another
client's id (knocking it off, and with ``clean_session=1`` wiping its queued messages).
:class:`_FleetBroker` makes the certificate's CN the client id, as Mosquitto's
``use_username_as_clientid`` does. It also re-reads the certificate of every new connection
(amqtt keeps the first connection's TLS object on a persistent session), and should a client id
ever be held by another identity, the old session is dropped rather than inherited.

Finally, amqtt acknowledges a QoS 1 PUBLISH when it queues it for routing and drops what is
still queued when the client disconnects; :class:`_FleetBroker` routes it before the session
ends.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig, ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.utils import gen_client_id
from cryptography import x509
from cryptography.x509.oid import NameOID

from certs import SERVER_IDENTITY, PkiDir
from server.embedded_broker.acl import FleetAcl

__all__ = [
    "IDENTITY_ATTRIBUTE",
    "AmqttBroker",
    "CertificateIdentityAuthPlugin",
    "FleetAclTopicPlugin",
    "build_server_ssl_context",
    "peer_identity",
]

logger = logging.getLogger(__name__)

IDENTITY_ATTRIBUTE = "fleetcare.identity"
"""Session attribute holding the authenticated identity (certificate CN)."""

_PLUGIN_MODULE = __name__


def peer_identity(ssl_object: ssl.SSLObject | None) -> str | None:
    """The CN of the peer certificate of a TLS connection, or None if there is none."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    if len(names) != 1:
        return None
    value = names[0].value
    return value if isinstance(value, str) and value else None


def build_server_ssl_context(pki: PkiDir) -> ssl.SSLContext:
    """Mutual TLS as the Mosquitto listener does it: fleet CA, client certificate required, CRL."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki.broker_cert, pki.broker_key)
    ctx.load_verify_locations(cafile=pki.ca_cert)
    if pki.crl.exists():
        ctx.load_verify_locations(cafile=pki.crl)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class CertificateIdentityAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """Identity = CN of the client certificate; the CONNECT username and password are ignored."""

    @dataclass
    class Config:
        server_identity: str = SERVER_IDENTITY

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._acl = FleetAcl(server_identity=self.config.server_identity)

    async def authenticate(self, *, session: Any) -> bool | None:
        identity = peer_identity(session.ssl_object)
        if identity is None:
            logger.warning("refused client %r: no client certificate CN", session.client_id)
            return False
        if session.will_flag and not self._acl.may_publish(identity, session.will_topic or ""):
            logger.warning(
                "refused %s (client id %r): will topic %r not allowed",
                identity,
                session.client_id,
                session.will_topic,
            )
            return False
        session.username = identity
        session.password = None
        session.attributes[IDENTITY_ATTRIBUTE] = identity
        return True


class FleetAclTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """The fleet ACL on publish, subscribe and delivery; an unauthenticated session gets nothing."""

    @dataclass
    class Config:
        server_identity: str = SERVER_IDENTITY

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._acl = FleetAcl(server_identity=self.config.server_identity, shared_subscriptions=False)

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        identity = session.attributes.get(IDENTITY_ATTRIBUTE) if session is not None else None
        if not identity or not topic:
            return False
        if action == Action.PUBLISH:
            allowed = self._acl.may_publish(identity, topic)
        elif action == Action.SUBSCRIBE:
            allowed = self._acl.may_subscribe(identity, topic)
        elif action == Action.RECEIVE:
            allowed = self._acl.may_receive(identity, topic)
        else:
            allowed = False
        if not allowed:
            logger.info("ACL denied %s %s on %r", identity, action, topic)
        return allowed


class _FleetBroker(Broker):  # type: ignore[misc]
    def __init__(self, config: BrokerConfig, ssl_context: ssl.SSLContext) -> None:
        self._fleet_ssl_context = ssl_context
        super().__init__(config, plugin_namespace="fleetcare.embedded_broker")

    def _create_ssl_context(self, listener: ListenerConfig) -> ssl.SSLContext:
        return self._fleet_ssl_context

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Any]:
        # Mirrors amqtt 0.12.1 Broker._initialize_client_session, plus the identity handling
        # described in the module docstring.
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except AMQTTError as exc:
            logger.warning("%s:%s: cannot read first packet as CONNECT: %s", remote_address, remote_port, exc)
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            logger.warning("invalid connection from %s:%s", remote_address, remote_port)
            await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            raise AMQTTError(exc) from exc

        ssl_object = writer.get_ssl_info()
        session.ssl_object = ssl_object
        identity = peer_identity(ssl_object)
        if identity:
            # The certificate's CN is the client id, whatever the client asked for (Mosquitto:
            # use_username_as_clientid): no certificate can take over another client's id.
            session.client_id = identity
        existing = self._sessions.get(session.client_id) if session.client_id else None
        if existing is not None and existing[0].attributes.get(IDENTITY_ATTRIBUTE) != identity:
            logger.warning(
                "client id %r was held by %r, now taken by %r: dropping the old session",
                session.client_id,
                existing[0].attributes.get(IDENTITY_ATTRIBUTE),
                identity,
            )
            await self._cleanup_session(session.client_id)
            existing = None

        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif existing is not None:
            old = existing[0]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive"):
                setattr(old, name, getattr(session, name))
            old.username, old.password, old.ssl_object = session.username, session.password, ssl_object
            session = old
            session.parent = 1
        else:
            session.parent = 0

        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _client_message_loop(self, client_session: Any, handler: Any) -> None:
        # Mirrors amqtt 0.12.1 Broker._client_message_loop, except at disconnection: amqtt
        # acknowledges a QoS 1 PUBLISH when it queues it for routing, and the original loop drops
        # what is still queued (or already dequeued) when the client goes. Here it is routed
        # first, in order, then the disconnection is handled (an agent's goodbye is its last).
        disconnect_waiter = asyncio.ensure_future(handler.wait_disconnect())
        subscribe_waiter = asyncio.ensure_future(handler.get_next_pending_subscription())
        unsubscribe_waiter = asyncio.ensure_future(handler.get_next_pending_unsubscription())
        wait_deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
        try:
            while True:
                done, _ = await asyncio.wait(
                    [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if subscribe_waiter in done:
                    await self._handle_subscription(client_session, handler, subscribe_waiter)
                    subscribe_waiter = asyncio.ensure_future(handler.get_next_pending_subscription())
                if unsubscribe_waiter in done:
                    await self._handle_unsubscription(client_session, handler, unsubscribe_waiter)
                    unsubscribe_waiter = asyncio.ensure_future(handler.get_next_pending_unsubscription())
                if wait_deliver in done:
                    if not await self._handle_message_delivery(client_session, handler, wait_deliver):
                        break
                    wait_deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
                if disconnect_waiter in done:
                    wait_deliver.cancel()  # returns None if cancelled, the message if it got one
                    last = (await asyncio.gather(wait_deliver, return_exceptions=True))[0]
                    leftover = [] if last is None or isinstance(last, BaseException) else [last]
                    queue = client_session.delivered_message_queue
                    while not queue.empty():
                        leftover.append(queue.get_nowait())
                    for message in leftover:
                        routed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                        routed.set_result(message)
                        await self._handle_message_delivery(client_session, handler, routed)
                    await self._handle_disconnect(client_session, handler, disconnect_waiter)
                    break
        except asyncio.CancelledError:
            logger.debug("client loop of %s cancelled", client_session.client_id)  # as amqtt does
        finally:
            waiters = [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver]
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    @property
    def bound_port(self) -> int:
        server = self._servers["default"]
        return int(server.instance.sockets[0].getsockname()[1])


class AmqttBroker:
    """amqtt on one mutual-TLS listener in this process's event loop. ``start()`` / ``stop()``."""

    def __init__(self, pki: PkiDir, *, host: str, port: int, server_identity: str = SERVER_IDENTITY) -> None:
        self._pki = pki
        self._host = host
        self._port = port
        self._server_identity = server_identity
        self._broker: _FleetBroker | None = None

    @property
    def port(self) -> int:
        if self._broker is None:
            raise RuntimeError("broker not started")
        return self._broker.bound_port

    async def start(self) -> None:
        plugin_config = {"server_identity": self._server_identity}
        config = BrokerConfig(
            listeners={
                "default": ListenerConfig(
                    type=ListenerType.TCP,
                    bind=f"{self._host}:{self._port}",
                    ssl=True,
                    cafile=self._pki.ca_cert,
                    certfile=self._pki.broker_cert,
                    keyfile=self._pki.broker_key,
                )
            },
            plugins={
                f"{_PLUGIN_MODULE}.CertificateIdentityAuthPlugin": dict(plugin_config),
                f"{_PLUGIN_MODULE}.FleetAclTopicPlugin": dict(plugin_config),
            },
        )
        broker = _FleetBroker(config, build_server_ssl_context(self._pki))
        await broker.start()
        self._broker = broker

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
