"""The link acknowledges a command only once it is stored (manual PUBACK, agent/link.py): the
aiomqtt/paho hooks it relies on, and a command whose storing failed coming back from the broker."""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta
from pathlib import Path

import aiomqtt
import paho.mqtt.client as mqtt
import pytest

from agent import AgentRuntime
from agent.errors import InboxError
from agent.inbox import InboxEntry
from agent.link import _Client
from certs import PkiDir
from protocol import Reply, ReplyType
from tests.agent.support import FakePlugin, ServerSide, device_settings
from tests.support.broker import MosquittoBroker, unique_device


def test_aiomqtt_and_paho_still_offer_what_the_manual_acknowledgement_uses() -> None:
    """agent.link overrides aiomqtt's private ``Client._on_message`` (for the DUP flag) and
    drives paho's client (aiomqtt's private ``_client``) with ``manual_ack_set``/``ack``; had an
    upgrade renamed them, commands would be acknowledged on receipt again, or never."""
    assert list(inspect.signature(aiomqtt.Client._on_message).parameters) == [
        "self",
        "client",
        "userdata",
        "message",
    ]
    assert callable(mqtt.Client.manual_ack_set)
    assert list(inspect.signature(mqtt.Client.ack).parameters) == ["self", "mid", "qos"]
    assert "dup" in vars(mqtt.MQTTMessage) or hasattr(mqtt.MQTTMessage(), "dup")


async def test_the_link_client_does_not_acknowledge_on_its_own() -> None:
    client = _Client("127.0.0.1", 1)
    paho = client._client
    assert paho._manual_ack is True
    message = mqtt.MQTTMessage(mid=7, topic=b"fc/v1/d/x/down/cmd")
    message.dup = True
    client._on_message(paho, None, message)
    assert client.redelivered == {7}


@pytest.mark.integration
async def test_a_command_that_could_not_be_stored_is_not_acknowledged_and_comes_back(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    """The inbox fails once: no PUBACK, the link reconnects, the broker redelivers (DUP), and the
    command runs once."""
    device_id = unique_device(pki, "inbox-link")
    settings = device_settings(tmp_path, pki, broker, device_id, policy={"allowed_actions": ["fake.touch"]})
    plugin = FakePlugin()
    calls: list[bool] = []
    async with (
        asyncio.timeout(30),
        ServerSide(broker, pki, device_id) as server,
        AgentRuntime(settings, plugins=[plugin]) as agent,
    ):
        keep = agent.inbox.keep

        def failing_once(payload: bytes, *, redelivered: bool = False) -> InboxEntry | None:
            calls.append(redelivered)
            if len(calls) == 1:
                raise InboxError("disk full (test)")
            return keep(payload, redelivered=redelivered)

        agent.inbox.keep = failing_once  # type: ignore[method-assign]
        await agent.wait_connected()
        command = server.sign("fake.touch", ttl=timedelta(minutes=1))
        await server.send(command)
        replies = await server.replies(command.id)
        assert agent.link.connections == 2
    assert calls == [False, True]
    assert [r.type for r in replies if r.type is not ReplyType.PROGRESS] == [
        ReplyType.ACCEPTED,
        ReplyType.RESULT,
    ]
    assert all(isinstance(r, Reply) for r in replies)
    assert len(plugin.calls_of(command.id)) == 1
