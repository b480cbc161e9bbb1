"""The server's MQTT link against a real Mosquitto: a message is acknowledged only when the
server says so (after its commit); an unacknowledged one comes back on the next connection."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import pytest

import protocol
from certs import PkiDir
from server.mqtt import InboundMessage, MqttLink
from server.settings import MqttSettings
from tests.support.broker import MosquittoBroker, tls_context, unique_device

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def link_settings(pki: PkiDir, broker: MosquittoBroker, client_id: str, **extra: object) -> MqttSettings:
    return MqttSettings(
        host=broker.host,
        port=broker.port,
        ca_file=pki.ca_cert,
        cert_file=pki.server_client_cert,
        key_file=pki.server_client_key,
        client_id=client_id,
        reconnect_min=0.05,
        reconnect_max=0.2,
        **extra,
    )


@contextlib.asynccontextmanager
async def running(link: MqttLink) -> AsyncIterator[MqttLink]:
    task = asyncio.create_task(link.run())
    try:
        async with asyncio.timeout(10):
            await link.wait_connected()
        yield link
    finally:
        await link.close()
        await task


async def next_message(link: MqttLink) -> InboundMessage:
    async with asyncio.timeout(10):
        message = await link.messages.get()
    assert message is not None
    return message


async def publish(broker: MosquittoBroker, pki: PkiDir, device_id: str, *payloads: bytes) -> None:
    topic = protocol.up_topic(device_id, protocol.UpKind.EVENT)
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=device_id, tls_context=tls_context(pki, device_id)
    ) as client:
        for payload in payloads:
            await client.publish(topic, payload, qos=1)


@pytest.mark.parametrize("shared_group", ["fleetcare", None], ids=["shared", "plain"])
async def test_unacked_message_is_redelivered_and_acked_one_is_not(
    pki: PkiDir, broker: MosquittoBroker, shared_group: str | None
) -> None:
    device_id = unique_device(pki, "link")
    settings = link_settings(pki, broker, f"fleetcare-link-{uuid.uuid4().hex[:8]}", shared_group=shared_group)

    async with running(MqttLink(settings)) as link:  # creates the persistent session
        await publish(broker, pki, device_id, b"first")
        first = await next_message(link)
        assert first.payload == b"first"
        # not acknowledged: as if the server died before its commit

    async with running(MqttLink(settings)) as link:
        again = await next_message(link)
        assert again.payload == b"first"  # the broker kept it for the session
        link.ack(again)  # committed now
        await publish(broker, pki, device_id, b"sentinel-1")
        sentinel = await next_message(link)
        assert sentinel.payload == b"sentinel-1"
        link.ack(sentinel)

    async with running(MqttLink(settings)) as link:
        await publish(broker, pki, device_id, b"sentinel-2")
        # Mosquitto redelivers queued messages first: had "first" not been acked, it would come now
        assert (await next_message(link)).payload == b"sentinel-2"
        assert link.messages.empty()


async def test_publish_waits_for_puback_and_fails_fast_when_disconnected(
    pki: PkiDir, broker: MosquittoBroker
) -> None:
    from server.errors import Unavailable  # noqa: PLC0415

    device_id = unique_device(pki, "link-pub")
    link = MqttLink(link_settings(pki, broker, f"fleetcare-link-{uuid.uuid4().hex[:8]}"))
    with pytest.raises(Unavailable):
        await link.publish(protocol.command_topic(device_id), b"{}")
    async with running(link):
        await link.publish(protocol.command_topic(device_id), b"{}")
