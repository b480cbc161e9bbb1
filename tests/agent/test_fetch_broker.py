"""file.fetch through the real broker: a multi-megabyte file streamed as output replies arrives
complete and in order, with the broker restarted in the middle of the stream (QoS 1: the
subscriber keeps a persistent session; duplicates are possible and dropped by (command, chunk))."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import uuid
from datetime import timedelta
from pathlib import Path

import aiomqtt
import pytest

from agent import AgentRuntime
from certs import SERVER_IDENTITY, PkiDir
from protocol import CommandSigner, Reply, ReplyType, command_topic, decode_uplink, encode, load_private_key
from tests.agent.support import device_settings
from tests.support.broker import MosquittoBroker, tls_context, unique_device

pytestmark = pytest.mark.integration


class Reassembler:
    """The technician's side: a persistent MQTT session that reconnects after a broker restart
    and puts the output chunks of one command back together."""

    def __init__(self, broker: MosquittoBroker, pki: PkiDir, device_id: str) -> None:
        self.broker = broker
        self.pki = pki
        self.device_id = device_id
        self.identifier = f"test-fetch-{uuid.uuid4().hex[:8]}"
        self.chunks: dict[tuple[str, int], str] = {}
        self.duplicates = 0
        self.result: Reply | None = None
        self.connected = asyncio.Event()
        self.changed = asyncio.Event()
        self.client: aiomqtt.Client | None = None

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    tls_context=tls_context(self.pki, SERVER_IDENTITY),
                    identifier=self.identifier,
                    clean_session=False,
                ) as client:
                    self.client = client
                    await client.subscribe(f"fc/v1/d/{self.device_id}/up/reply", qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        self._take(decode_uplink(message.topic.value, message.payload))
            except aiomqtt.MqttError:
                self.connected.clear()
                self.client = None
                await asyncio.sleep(0.2)

    def _take(self, reply: object) -> None:
        assert isinstance(reply, Reply)
        if reply.type is ReplyType.OUTPUT:
            assert reply.chunk is not None
            key = (reply.command_id, reply.chunk)
            if key in self.chunks:
                self.duplicates += 1
            self.chunks[key] = reply.output
        elif reply.type is ReplyType.RESULT:
            self.result = reply
        self.changed.set()

    async def wait(self, condition: object) -> None:
        while not condition():  # type: ignore[operator]
            self.changed.clear()
            await self.changed.wait()


async def test_file_fetch_survives_a_broker_restart_and_arrives_intact(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "fetch")
    allowed = tmp_path / "logs"
    allowed.mkdir()
    payload = os.urandom(3 * 1024 * 1024 + 777)
    (allowed / "device.log").write_bytes(payload)
    settings = device_settings(
        tmp_path,
        pki,
        broker,
        device_id,
        policy={"allowed_actions": ["file.fetch"], "consent_actions": [], "fetch_paths": [allowed]},
    )
    signer = CommandSigner(load_private_key(Path(pki.signing_key).read_bytes()))
    collector = Reassembler(broker, pki, device_id)
    async with asyncio.timeout(60), asyncio.TaskGroup() as group:
        reader = group.create_task(collector.run())
        await collector.connected.wait()
        async with AgentRuntime(settings) as agent:
            await agent.wait_connected()
            command = signer.sign(
                device_id=device_id,
                action="file.fetch",
                issuer="tina",
                ttl=timedelta(minutes=5),
                args={"path": str(allowed / "device.log")},
            )
            assert collector.client is not None
            await collector.client.publish(command_topic(device_id), encode(command), qos=1)
            await collector.wait(lambda: len(collector.chunks) >= 40)
            broker.stop()
            received_before = len(collector.chunks)
            await asyncio.sleep(0.3)
            broker.start()
            await collector.wait(lambda: collector.result is not None)
        reader.cancel()
    result = collector.result
    assert result is not None
    assert result.ok
    expected_chunks = result.data["chunks"]
    assert received_before < expected_chunks  # the restart really happened mid-stream
    numbers = sorted(n for cid, n in collector.chunks if cid == command.id)
    assert numbers == list(range(expected_chunks))
    data = b"".join(base64.b64decode(collector.chunks[(command.id, n)]) for n in numbers)
    assert len(data) == len(payload) == result.data["size"]
    assert hashlib.sha256(data).hexdigest() == result.data["sha256"] == hashlib.sha256(payload).hexdigest()
