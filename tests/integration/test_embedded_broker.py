"""The embedded broker enforces the production security semantics, whichever broker runs.

Every "never arrives" check is made deterministic with a sentinel: after the forbidden message,
an allowed one is sent on the same path, and the receiver collects everything up to it.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from certs import SERVER_IDENTITY, PkiDir, init_pki, issue_device_cert, revoke_device
from server.embedded_broker import EmbeddedBroker, EmbeddedBrokerError, mosquitto_binary
from tests.support.broker import tls_context, unique_device

pytestmark = pytest.mark.integration

TIMEOUT = 10.0
KINDS = ["mosquitto", "amqtt"]


@pytest.fixture(params=KINDS)
async def embedded(
    request: pytest.FixtureRequest, pki: PkiDir, tmp_path: Path
) -> AsyncIterator[EmbeddedBroker]:
    if request.param == "mosquitto" and mosquitto_binary() is None:
        pytest.skip("mosquitto binary not found")
    async with asyncio.timeout(TIMEOUT):
        broker = EmbeddedBroker(pki, tmp_path / "broker", prefer=request.param)
        await broker.__aenter__()
    try:
        assert broker.kind == request.param
        yield broker
    finally:
        async with asyncio.timeout(TIMEOUT):
            await broker.__aexit__(None, None, None)


def client(
    broker: EmbeddedBroker,
    ctx: ssl.SSLContext,
    *,
    identifier: str | None = None,
    clean_session: bool | None = None,
    will: aiomqtt.Will | None = None,
) -> aiomqtt.Client:
    return aiomqtt.Client(
        "localhost",
        broker.port,
        identifier=identifier or f"t-{uuid.uuid4().hex[:10]}",
        tls_context=ctx,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=clean_session,
        will=will,
        timeout=TIMEOUT,
    )


async def collect_until(c: aiomqtt.Client, sentinel: bytes) -> list[aiomqtt.Message]:
    """Every message received up to and including the one whose payload is ``sentinel``."""
    received: list[aiomqtt.Message] = []
    async with asyncio.timeout(TIMEOUT):
        async for message in c.messages:
            received.append(message)
            if message.payload == sentinel:
                return received
    raise AssertionError("message stream ended before the sentinel")


def topics(messages: list[aiomqtt.Message]) -> list[str]:
    return [m.topic.value for m in messages]


def _string(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def raw_connect(
    broker: EmbeddedBroker,
    ctx: ssl.SSLContext,
    *,
    client_id: str | None = None,
    will: tuple[str, bytes] | None = None,
) -> int:
    """Send a bare MQTT 3.1.1 CONNECT over TLS; return the CONNACK code, or -1 if the broker
    closed or failed the connection instead, then drop the connection without DISCONNECT (so a
    will fires). aiomqtt only times out when the TLS peer hangs up before CONNACK, which would
    make a refusal indistinguishable from a slow broker."""
    flags = 0x02  # clean session
    payload = _string((client_id or f"raw-{uuid.uuid4().hex[:8]}").encode())
    if will is not None:
        flags |= 0x04 | 0x08  # will, QoS 1
        payload += _string(will[0].encode()) + _string(will[1])
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x3c" + payload
    packet = b"\x10" + _remaining_length(len(body)) + body
    async with asyncio.timeout(TIMEOUT):
        try:
            reader, writer = await asyncio.open_connection("localhost", broker.port, ssl=ctx)
        except (ssl.SSLError, ConnectionError):
            return -1
        try:
            writer.write(packet)
            await writer.drain()
            connack = await reader.readexactly(4)
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
            return -1
        finally:
            writer.transport.abort()
    assert connack[:2] == b"\x20\x02", connack
    return connack[3]


def codes(granted: Any) -> list[int]:
    return [getattr(code, "value", code) for code in granted]


async def assert_refused(broker: EmbeddedBroker, ctx: ssl.SSLContext) -> None:
    assert await raw_connect(broker, ctx) != 0


async def test_raw_connect_with_a_fleet_certificate_is_accepted(
    embedded: EmbeddedBroker, pki: PkiDir
) -> None:
    """The control for the refusal tests below: the same probe succeeds with a valid identity."""
    assert await raw_connect(embedded, tls_context(pki, unique_device(pki, "eb"))) == 0


async def test_client_without_certificate_is_refused(embedded: EmbeddedBroker, pki: PkiDir) -> None:
    await assert_refused(embedded, tls_context(pki, None))


async def test_client_from_another_ca_is_refused(
    embedded: EmbeddedBroker, pki: PkiDir, tmp_path: Path
) -> None:
    other = init_pki(tmp_path / "other-pki")
    issue_device_cert(other, "intruder")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    ctx.load_cert_chain(other.device_cert("intruder"), other.device_key("intruder"))
    await assert_refused(embedded, ctx)


async def test_device_publishes_own_uplink_and_server_receives_it(
    embedded: EmbeddedBroker, pki: PkiDir
) -> None:
    device = unique_device(pki, "eb")
    async with (
        client(embedded, tls_context(pki, SERVER_IDENTITY)) as server,
        client(embedded, tls_context(pki, device)) as dev,
    ):
        async with asyncio.timeout(TIMEOUT):
            await server.subscribe("fc/v1/d/+/up/#", qos=1)
            await dev.publish(f"fc/v1/d/{device}/up/telemetry", b"hello", qos=1)
        received = await collect_until(server, b"hello")
    assert topics(received) == [f"fc/v1/d/{device}/up/telemetry"]


async def test_device_cannot_publish_on_another_devices_uplink(embedded: EmbeddedBroker, pki: PkiDir) -> None:
    a, b = unique_device(pki, "eb-a"), unique_device(pki, "eb-b")
    async with (
        client(embedded, tls_context(pki, SERVER_IDENTITY)) as server,
        client(embedded, tls_context(pki, a)) as dev_a,
    ):
        async with asyncio.timeout(TIMEOUT):
            await server.subscribe("fc/v1/d/+/up/#", qos=1)
            await dev_a.publish(f"fc/v1/d/{b}/up/event", b"forged", qos=1)
            await dev_a.publish(f"fc/v1/d/{a}/down/cmd", b"self-command", qos=1)
            await dev_a.publish(f"fc/v1/d/{a}/up/event", b"sentinel", qos=1)
        received = await collect_until(server, b"sentinel")
    assert topics(received) == [f"fc/v1/d/{a}/up/event"]


async def test_device_cannot_receive_another_devices_commands(embedded: EmbeddedBroker, pki: PkiDir) -> None:
    a, b = unique_device(pki, "eb-a"), unique_device(pki, "eb-b")
    forbidden = [f"fc/v1/d/{b}/down/#", "fc/v1/d/+/down/#", "#"]
    async with (
        client(embedded, tls_context(pki, SERVER_IDENTITY)) as server,
        client(embedded, tls_context(pki, a)) as dev_a,
    ):
        async with asyncio.timeout(TIMEOUT):
            granted = [await dev_a.subscribe(f, qos=1) for f in forbidden]
            await dev_a.subscribe(f"fc/v1/d/{a}/down/#", qos=1)
            await server.publish(f"fc/v1/d/{b}/down/cmd", b"for-b", qos=1)
            await server.publish(f"fc/v1/d/{a}/down/cmd", b"sentinel", qos=1)
        received = await collect_until(dev_a, b"sentinel")
    assert topics(received) == [f"fc/v1/d/{a}/down/cmd"]
    assert_subscriptions_refused(embedded, granted)


def assert_subscriptions_refused(broker: EmbeddedBroker, granted: list[Any]) -> None:
    """amqtt refuses a forbidden subscription (SUBACK 0x80). Mosquitto's acl_file grants every
    subscription and applies the read ACL to each delivery instead: nothing arrives either way."""
    if broker.kind == "amqtt":
        assert [codes(g) for g in granted] == [[0x80]] * len(granted)


async def test_device_cannot_send_commands_to_another_device(embedded: EmbeddedBroker, pki: PkiDir) -> None:
    a, b = unique_device(pki, "eb-a"), unique_device(pki, "eb-b")
    async with (
        client(embedded, tls_context(pki, SERVER_IDENTITY)) as server,
        client(embedded, tls_context(pki, a)) as dev_a,
        client(embedded, tls_context(pki, b)) as dev_b,
    ):
        async with asyncio.timeout(TIMEOUT):
            await dev_b.subscribe(f"fc/v1/d/{b}/down/#", qos=1)
            await dev_a.publish(f"fc/v1/d/{b}/down/cmd", b"forged-command", qos=1)
            await server.publish(f"fc/v1/d/{b}/down/cmd", b"sentinel", qos=1)
        received = await collect_until(dev_b, b"sentinel")
    assert [m.payload for m in received] == [b"sentinel"]


async def test_device_cannot_read_other_uplinks(embedded: EmbeddedBroker, pki: PkiDir) -> None:
    a, b = unique_device(pki, "eb-a"), unique_device(pki, "eb-b")
    async with (
        client(embedded, tls_context(pki, SERVER_IDENTITY)) as server,
        client(embedded, tls_context(pki, a)) as dev_a,
        client(embedded, tls_context(pki, b)) as dev_b,
    ):
        async with asyncio.timeout(TIMEOUT):
            granted = [await dev_a.subscribe(f, qos=1) for f in ("fc/v1/d/+/up/#", f"fc/v1/d/{b}/up/#")]
            await dev_a.subscribe(f"fc/v1/d/{a}/down/#", qos=1)
            await dev_b.publish(f"fc/v1/d/{b}/up/telemetry", b"b-data", qos=1)
            await server.publish(f"fc/v1/d/{a}/down/cmd", b"sentinel", qos=1)
        received = await collect_until(dev_a, b"sentinel")
    assert topics(received) == [f"fc/v1/d/{a}/down/cmd"]
    assert_subscriptions_refused(embedded, granted)


async def test_will_on_a_foreign_topic_never_reaches_the_server(
    embedded: EmbeddedBroker, pki: PkiDir
) -> None:
    """amqtt refuses the CONNECT (not authorised); Mosquitto 2.0.11 accepts it and drops the will
    when it would be sent. Either way the forged will never arrives."""
    a, b = unique_device(pki, "eb-a"), unique_device(pki, "eb-b")
    client_id = f"will-{uuid.uuid4().hex[:8]}"
    async with client(embedded, tls_context(pki, SERVER_IDENTITY)) as server:
        async with asyncio.timeout(TIMEOUT):
            await server.subscribe("fc/v1/d/+/up/#", qos=1)
        code = await raw_connect(
            embedded, tls_context(pki, a), client_id=client_id, will=(f"fc/v1/d/{b}/up/status", b"forged")
        )
        assert code in {0, 5}
        if embedded.kind == "amqtt":
            assert code == 5  # not authorised
        # Same client id again: the broker has dealt with the first connection (and its will)
        # before it acknowledges this one.
        async with client(embedded, tls_context(pki, a), identifier=client_id) as dev_a:
            async with asyncio.timeout(TIMEOUT):
                await dev_a.publish(f"fc/v1/d/{a}/up/event", b"sentinel", qos=1)
            received = await collect_until(server, b"sentinel")
    assert topics(received) == [f"fc/v1/d/{a}/up/event"]


async def test_revoked_certificate_is_refused(pki: PkiDir, tmp_path: Path) -> None:
    # The CRL is read at start-up, so revoke first, then start each broker.
    device = unique_device(pki, "eb-revoked")
    revoke_device(pki, device)
    for kind in KINDS:
        if kind == "mosquitto" and mosquitto_binary() is None:
            continue
        async with EmbeddedBroker(pki, tmp_path / kind, prefer=kind) as broker:  # type: ignore[arg-type]
            await assert_refused(broker, tls_context(pki, device))


async def test_client_id_takeover_by_another_identity_inherits_nothing(
    embedded: EmbeddedBroker, pki: PkiDir
) -> None:
    """A device asking for the server's client id, with a persistent session, is connected under
    its own certificate's name: the server stays connected and served, and the device gets none
    of the server's rights (issue 13, attack 2; both brokers make the CN the client id)."""
    a, intruder_id = unique_device(pki, "eb-a"), unique_device(pki, "eb-b")
    async with client(
        embedded, tls_context(pki, SERVER_IDENTITY), identifier=SERVER_IDENTITY, clean_session=False
    ) as server:
        async with asyncio.timeout(TIMEOUT):
            await server.subscribe("fc/v1/d/+/up/#", qos=1)
        async with (
            client(
                embedded, tls_context(pki, intruder_id), identifier=SERVER_IDENTITY, clean_session=False
            ) as intruder,
            client(embedded, tls_context(pki, a)) as dev_a,
        ):
            async with asyncio.timeout(TIMEOUT):
                await intruder.subscribe("fc/v1/d/+/up/#", qos=1)  # the server's rights, if it got them
                await intruder.subscribe(f"fc/v1/d/{intruder_id}/down/#", qos=1)
                await dev_a.publish(f"fc/v1/d/{a}/up/event", b"uplink", qos=1)
            seen_by_server = await collect_until(server, b"uplink")
            async with asyncio.timeout(TIMEOUT):
                await server.publish(f"fc/v1/d/{intruder_id}/down/cmd", b"sentinel", qos=1)
            seen_by_intruder = await collect_until(intruder, b"sentinel")
    assert topics(seen_by_server) == [f"fc/v1/d/{a}/up/event"]
    assert topics(seen_by_intruder) == [f"fc/v1/d/{intruder_id}/down/cmd"]


async def test_shared_subscription_for_the_server(embedded: EmbeddedBroker, pki: PkiDir) -> None:
    device = unique_device(pki, "eb")
    shared = "$share/fleetcare/fc/v1/d/+/up/#"
    if not embedded.supports_shared_subscriptions:
        async with client(embedded, tls_context(pki, SERVER_IDENTITY)) as server, asyncio.timeout(TIMEOUT):
            assert codes(await server.subscribe(shared, qos=1)) == [0x80]
        return
    server = aiomqtt.Client(
        "localhost",
        embedded.port,
        identifier=f"t-{uuid.uuid4().hex[:10]}",
        tls_context=tls_context(pki, SERVER_IDENTITY),
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=TIMEOUT,
    )
    async with server, client(embedded, tls_context(pki, device)) as dev:
        async with asyncio.timeout(TIMEOUT):
            assert codes(await server.subscribe(shared, qos=1)) == [1]
            await dev.publish(f"fc/v1/d/{device}/up/event", b"shared", qos=1)
        received = await collect_until(server, b"shared")
    assert topics(received) == [f"fc/v1/d/{device}/up/event"]


async def test_unavailable_mosquitto_is_an_error(
    pki: PkiDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.embedded_broker.broker.mosquitto_binary", lambda: None)
    with pytest.raises(EmbeddedBrokerError, match="mosquitto"):
        async with EmbeddedBroker(pki, tmp_path, prefer="mosquitto"):
            pass
    async with asyncio.timeout(TIMEOUT), EmbeddedBroker(pki, tmp_path, prefer="auto") as broker:
        assert broker.kind == "amqtt"
        assert not broker.supports_shared_subscriptions


async def test_messages_acknowledged_before_a_disconnect_are_delivered(
    embedded: EmbeddedBroker, pki: PkiDir
) -> None:
    """An agent's last messages (its goodbye status) are acknowledged, then it disconnects at once:
    the broker must still deliver them (stock amqtt 0.12 dropped the ones not yet routed)."""
    device = unique_device(pki, "eb")
    count = 200
    async with client(embedded, tls_context(pki, SERVER_IDENTITY)) as server:
        async with asyncio.timeout(TIMEOUT):
            await server.subscribe("fc/v1/d/+/up/#", qos=1)
        async with client(embedded, tls_context(pki, device)) as dev, asyncio.timeout(TIMEOUT):
            await asyncio.gather(
                *(dev.publish(f"fc/v1/d/{device}/up/telemetry", str(i).encode(), qos=1) for i in range(count))
            )
        received = await collect_until(server, str(count - 1).encode())
    assert sorted(int(m.payload) for m in received) == list(range(count))
