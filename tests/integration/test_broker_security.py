"""The broker enforces the fleet's security model: mutual TLS, the ACL, revocation.

Against a real Mosquitto configured by certs.write_mosquitto_config. "Nothing forbidden
arrived" is proved with a sentinel: after the forbidden message, a permitted one goes the same
way; Mosquitto handles packets in order, so once the sentinel arrives the forbidden message
would have arrived before it. No test sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid

import aiomqtt
import pytest

from certs import SERVER_IDENTITY, PkiDir, init_pki, issue_device_cert, revoke_device
from tests.support import MosquittoBroker, tls_context, unique_device

pytestmark = pytest.mark.integration

TEST_TIMEOUT = 20
REFUSED_CONNECT_TIMEOUT = 2  # aiomqtt's connect timeout when the broker is expected to refuse
BOTH_PROTOCOLS = pytest.mark.parametrize(
    "protocol", [aiomqtt.ProtocolVersion.V311, aiomqtt.ProtocolVersion.V5], ids=["mqtt311", "mqtt5"]
)


def up(device_id: str, kind: str = "event") -> str:
    return f"fc/v1/d/{device_id}/up/{kind}"


def down(device_id: str) -> str:
    return f"fc/v1/d/{device_id}/down/cmd"


def connect(
    broker: MosquittoBroker,
    ctx: ssl.SSLContext,
    *,
    name: str = "client",
    protocol: aiomqtt.ProtocolVersion | None = None,
    timeout: float | None = None,
) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"{name}-{uuid.uuid4().hex[:8]}",
        tls_context=ctx,
        protocol=protocol,
        timeout=timeout,
    )


async def until(client: aiomqtt.Client, topic: str) -> list[aiomqtt.Message]:
    """Every message received up to and including the first one on ``topic``."""
    received = []
    async for message in client.messages:
        received.append(message)
        if message.topic.value == topic:
            return received
    raise AssertionError("message stream ended")  # pragma: no cover


def topics(messages: list[aiomqtt.Message]) -> list[str]:
    return [m.topic.value for m in messages]


async def tls_alert(broker: MosquittoBroker, ctx: ssl.SSLContext) -> str:
    """The TLS alert the broker answers a client with, e.g. 'SSLV3_ALERT_CERTIFICATE_REVOKED'.

    Under TLS 1.3 the broker judges the client certificate after the client's side of the
    handshake is done, so the verdict arrives on the first read.
    """
    writer = None
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(broker.host, broker.port, ssl=ctx)
            await reader.read(1)
    except ssl.SSLError as exc:
        return str(exc.reason)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()
    return ""


async def assert_refused(broker: MosquittoBroker, ctx: ssl.SSLContext, alert: str) -> None:
    """An MQTT client with ``ctx`` cannot connect, and the broker's TLS alert says why."""
    # aiomqtt 2.5 does not notice a TLS 1.3 post-handshake alert: the refusal surfaces as its
    # connect timeout, hence the short timeout here and the precise check below.
    with pytest.raises(aiomqtt.MqttError):
        async with connect(broker, ctx, name="refused", timeout=REFUSED_CONNECT_TIMEOUT):
            pass
    assert await tls_alert(broker, ctx) == alert


async def test_client_without_certificate_cannot_connect(broker: MosquittoBroker, pki: PkiDir) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        await assert_refused(broker, tls_context(pki, None), "TLSV13_ALERT_CERTIFICATE_REQUIRED")


async def test_client_with_certificate_from_another_ca_cannot_connect(
    broker: MosquittoBroker, pki: PkiDir, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = init_pki(tmp_path_factory.mktemp("other-ca") / "pki")
    device_id = unique_device(pki, "twin")
    issue_device_cert(other, device_id)  # same CN, wrong issuer
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))  # trusts the real broker
    ctx.load_cert_chain(other.device_cert(device_id), other.device_key(device_id))
    async with asyncio.timeout(TEST_TIMEOUT):
        await assert_refused(broker, ctx, "TLSV1_ALERT_UNKNOWN_CA")


@BOTH_PROTOCOLS
async def test_device_publishes_own_uplink_and_server_receives_it(
    broker: MosquittoBroker, pki: PkiDir, protocol: aiomqtt.ProtocolVersion
) -> None:
    device = unique_device(pki, "a")
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        connect(broker, tls_context(pki, SERVER_IDENTITY), name="server", protocol=protocol) as server,
        connect(broker, tls_context(pki, device), name=device, protocol=protocol) as client,
    ):
        await server.subscribe("fc/v1/d/+/up/#", qos=1)
        await client.publish(up(device, "telemetry"), b"sample", qos=1)
        message = await anext(server.messages)
    assert message.topic.value == up(device, "telemetry")
    assert message.payload == b"sample"


@BOTH_PROTOCOLS
async def test_device_cannot_publish_on_another_devices_uplink(
    broker: MosquittoBroker, pki: PkiDir, protocol: aiomqtt.ProtocolVersion
) -> None:
    device_a, device_b = unique_device(pki, "a"), unique_device(pki, "b")
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        connect(broker, tls_context(pki, SERVER_IDENTITY), name="server", protocol=protocol) as server,
        connect(broker, tls_context(pki, device_a), name=device_a, protocol=protocol) as client,
    ):
        await server.subscribe("fc/v1/d/+/up/#", qos=1)
        # Mosquitto acknowledges the forbidden publish (MQTT 5: PUBACK 0x87, which aiomqtt
        # does not surface) and drops it.
        await client.publish(up(device_b), b"forged", qos=1)
        await client.publish(up(device_a), b"sentinel", qos=1)
        received = await until(server, up(device_a))
    assert topics(received) == [up(device_a)]


async def test_device_cannot_receive_another_devices_commands(broker: MosquittoBroker, pki: PkiDir) -> None:
    device_a, device_b = unique_device(pki, "a"), unique_device(pki, "b")
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        connect(broker, tls_context(pki, SERVER_IDENTITY), name="server") as server,
        connect(broker, tls_context(pki, device_a), name=device_a) as snoop,
        connect(broker, tls_context(pki, device_b), name=device_b) as victim,
    ):
        # Mosquitto 2.0 grants every subscription; the ACL filters what is delivered on it.
        for pattern in (down(device_b), "fc/v1/d/+/down/#", "#", down(device_a)):
            await snoop.subscribe(pattern, qos=1)
        await victim.subscribe(down(device_b), qos=1)
        await server.publish(down(device_b), b"for-b", qos=1)
        await server.publish(down(device_a), b"sentinel", qos=1)
        seen_by_a = await until(snoop, down(device_a))
        seen_by_b = await anext(victim.messages)
    assert set(topics(seen_by_a)) == {down(device_a)}
    assert (seen_by_b.topic.value, seen_by_b.payload) == (down(device_b), b"for-b")


async def test_device_cannot_send_commands_to_another_device(broker: MosquittoBroker, pki: PkiDir) -> None:
    device_a, device_b = unique_device(pki, "a"), unique_device(pki, "b")
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        connect(broker, tls_context(pki, SERVER_IDENTITY), name="server") as server,
        connect(broker, tls_context(pki, device_a), name=device_a) as attacker,
        connect(broker, tls_context(pki, device_b), name=device_b) as victim,
    ):
        await victim.subscribe(down(device_b), qos=1)
        await attacker.publish(down(device_b), b"forged-command", qos=1)  # acked = processed
        await server.publish(down(device_b), b"sentinel", qos=1)
        received = await until(victim, down(device_b))
    assert [m.payload for m in received] == [b"sentinel"]


async def test_device_cannot_read_another_devices_uplink(broker: MosquittoBroker, pki: PkiDir) -> None:
    device_a, device_b = unique_device(pki, "a"), unique_device(pki, "b")
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        connect(broker, tls_context(pki, SERVER_IDENTITY), name="server") as server,
        connect(broker, tls_context(pki, device_a), name=device_a) as snoop,
        connect(broker, tls_context(pki, device_b), name=device_b) as other,
    ):
        await snoop.subscribe("fc/v1/d/+/up/#", qos=1)
        await snoop.subscribe(down(device_a), qos=1)
        await other.publish(up(device_b, "telemetry"), b"private", qos=1)
        await server.publish(down(device_a), b"sentinel", qos=1)
        received = await until(snoop, down(device_a))
    assert topics(received) == [down(device_a)]


async def test_revoked_device_is_refused_after_reload(broker: MosquittoBroker, pki: PkiDir) -> None:
    revoked, kept = unique_device(pki, "revoked"), unique_device(pki, "kept")
    async with asyncio.timeout(TEST_TIMEOUT):
        async with connect(broker, tls_context(pki, revoked), name=revoked):
            pass  # accepted before revocation
        revoke_device(pki, revoked)
        await asyncio.to_thread(broker.reload)
        await assert_refused(broker, tls_context(pki, revoked), "SSLV3_ALERT_CERTIFICATE_REVOKED")
        async with connect(broker, tls_context(pki, kept), name=kept) as client:
            await client.publish(up(kept), b"still welcome", qos=1)


async def test_revocation_applies_to_new_connections_and_a_restart_ends_the_old_one(
    broker: MosquittoBroker, pki: PkiDir
) -> None:
    device = unique_device(pki, "revoked")
    async with asyncio.timeout(TEST_TIMEOUT):
        async with connect(broker, tls_context(pki, SERVER_IDENTITY), name="server") as server:
            await server.subscribe("fc/v1/d/+/up/#", qos=1)
            async with connect(broker, tls_context(pki, device), name=device) as client:
                revoke_device(pki, device)
                await asyncio.to_thread(broker.reload)
                # Mosquitto does not re-check sessions that are already open.
                await client.publish(up(device), b"open session", qos=1)
                assert (await anext(server.messages)).payload == b"open session"
                await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)
        await assert_refused(broker, tls_context(pki, device), "SSLV3_ALERT_CERTIFICATE_REVOKED")


@BOTH_PROTOCOLS
async def test_server_identity_can_use_the_shared_subscription(
    broker: MosquittoBroker, pki: PkiDir, protocol: aiomqtt.ProtocolVersion
) -> None:
    device = unique_device(pki, "a")
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        connect(broker, tls_context(pki, SERVER_IDENTITY), name="ingest-1", protocol=protocol) as server,
        connect(broker, tls_context(pki, device), name=device, protocol=protocol) as client,
    ):
        await server.subscribe("$share/fleetcare/fc/v1/d/+/up/#", qos=1)
        await client.publish(up(device, "status"), b"online", qos=1)
        message = await anext(server.messages)
    assert (message.topic.value, message.payload) == (up(device, "status"), b"online")


async def test_device_cannot_use_the_shared_subscription_to_read_uplinks(
    broker: MosquittoBroker, pki: PkiDir
) -> None:
    device_a, device_b = unique_device(pki, "a"), unique_device(pki, "b")
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        connect(broker, tls_context(pki, SERVER_IDENTITY), name="server") as server,
        connect(broker, tls_context(pki, device_a), name=device_a) as snoop,
        connect(broker, tls_context(pki, device_b), name=device_b) as other,
    ):
        await snoop.subscribe("$share/fleetcare/fc/v1/d/+/up/#", qos=1)
        await snoop.subscribe(down(device_a), qos=1)
        await other.publish(up(device_b), b"private", qos=1)
        await server.publish(down(device_a), b"sentinel", qos=1)
        received = await until(snoop, down(device_a))
    assert topics(received) == [down(device_a)]


async def test_restart_keeps_the_servers_persistent_session(broker: MosquittoBroker, pki: PkiDir) -> None:
    device = unique_device(pki, "a")
    server_ctx = tls_context(pki, SERVER_IDENTITY)
    async with asyncio.timeout(TEST_TIMEOUT):
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            identifier="ingest-persistent",
            tls_context=server_ctx,
            clean_session=False,
        ) as server:
            await server.subscribe("fc/v1/d/+/up/#", qos=1)
        async with connect(broker, tls_context(pki, device), name=device) as client:
            await client.publish(up(device), b"queued while the server was away", qos=1)
        port = broker.port
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)
        assert broker.port == port
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            identifier="ingest-persistent",
            tls_context=server_ctx,
            clean_session=False,
        ) as server:
            message = await anext(server.messages)
    assert message.payload == b"queued while the server was away"


# -- identity from the certificate only (issue 13, attack 2) ------------------------------------

HOLD_SECONDS = 2.0  # how long the victim must stay connected and served after the takeover attempt


async def served_throughout(
    sender: aiomqtt.Client, receiver: aiomqtt.Client, topic: str, seconds: float = HOLD_SECONDS
) -> int:
    """Send numbered messages from ``sender`` on ``topic`` for ``seconds``, each awaited on
    ``receiver`` before the next: a receiver knocked off the broker ends its message stream
    (aiomqtt raises MqttError) or misses one, and the test fails. Returns how many went through."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    sent = 0
    while loop.time() < deadline:
        payload = f"hold-{sent}".encode()
        await sender.publish(topic, payload, qos=1)
        message = await anext(receiver.messages)
        assert (message.topic.value, message.payload) == (topic, payload)
        sent += 1
    return sent


def connected_as(broker: MosquittoBroker, identity: str) -> int:
    """How many connections Mosquitto logged under client id ``identity``."""
    return broker.log_tail(10_000).count(f" as {identity} (")


@BOTH_PROTOCOLS
async def test_device_certificate_cannot_take_over_another_devices_client_id(
    broker: MosquittoBroker, pki: PkiDir, protocol: aiomqtt.ProtocolVersion
) -> None:
    """Device B's certificate asks for device A's client id: A stays connected and served (its
    commands keep arriving), and the impostor is connected under its own id, B."""
    victim, impostor_id = unique_device(pki, "victim"), unique_device(pki, "impostor")
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        connect(broker, tls_context(pki, SERVER_IDENTITY), name="server", protocol=protocol) as server,
        aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=victim,
            tls_context=tls_context(pki, victim),
            protocol=protocol,
        ) as device,
    ):
        await device.subscribe(down(victim), qos=1)
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=victim,  # the attack: someone else's client id, with a clean session
            tls_context=tls_context(pki, impostor_id),
            protocol=protocol,
            clean_session=True if protocol == aiomqtt.ProtocolVersion.V311 else None,
        ) as impostor:
            await impostor.publish(up(impostor_id), b"impostor online", qos=1)
            started = asyncio.get_running_loop().time()
            served = await served_throughout(server, device, down(victim))
            held = asyncio.get_running_loop().time() - started
    print(
        f"\nvictim {victim} kept its connection {held:.1f} s after the takeover attempt, {served} commands delivered"
    )
    assert served > 0
    assert connected_as(broker, victim) == 1  # the victim's own connection, never the impostor's
    assert connected_as(broker, impostor_id) == 1  # the impostor was given its certificate's name


async def test_device_certificate_cannot_take_over_the_servers_client_id(
    broker: MosquittoBroker, pki: PkiDir
) -> None:
    """A device connects with the server's client id: the server stays connected and keeps
    receiving uplinks; the device is connected as itself and reads nothing it may not."""
    device_id = unique_device(pki, "impostor")
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=SERVER_IDENTITY,
            tls_context=tls_context(pki, SERVER_IDENTITY),
            clean_session=False,
        ) as server,
    ):
        await server.subscribe("fc/v1/d/+/up/#", qos=1)
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=SERVER_IDENTITY,  # the attack
            tls_context=tls_context(pki, device_id),
            clean_session=True,  # would also wipe the server's persistent session
        ) as impostor:
            await impostor.subscribe("fc/v1/d/+/up/#", qos=1)  # the server's rights, if it got them
            started = asyncio.get_running_loop().time()
            served = await served_throughout(impostor, server, up(device_id))
            held = asyncio.get_running_loop().time() - started
            # The impostor is device_id: its own uplinks are all it could ever publish, and it
            # reads no uplink at all (not even its own): a sentinel on its own down topic proves it.
            await impostor.subscribe(down(device_id), qos=1)
            await server.publish(down(device_id), b"sentinel", qos=1)
            seen_by_impostor = await until(impostor, down(device_id))
    print(f"\nserver kept its connection {held:.1f} s after the takeover attempt, {served} uplinks received")
    assert served > 0
    assert topics(seen_by_impostor) == [down(device_id)]
    assert connected_as(broker, SERVER_IDENTITY) == 1
    assert connected_as(broker, device_id) == 1
