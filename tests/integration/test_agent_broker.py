"""The real agent runtime against a real Mosquitto with mutual TLS; the test plays the server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import AgentRuntime, FatalLinkError
from certs import PkiDir, revoke_device
from protocol import CommandSigner, Event, Inventory, ReplyType, Severity, Status, Telemetry, encode
from tests.agent.support import FakePlugin, ServerSide, device_settings
from tests.support.broker import MosquittoBroker, unique_device

pytestmark = pytest.mark.integration


def _rejected_event(command_id: str | None, reason: str) -> Callable[[object], bool]:
    return lambda m: (
        isinstance(m, Event)
        and m.event == "command.rejected"
        and m.data.get("reason") == reason
        and m.data.get("command_id") == command_id
    )


async def test_agent_publishes_started_inventory_status_and_telemetry(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "agent")
    plugin = FakePlugin()
    settings = device_settings(tmp_path, pki, broker, device_id, site="Ward 3", telemetry_interval=0.2)
    async with asyncio.timeout(20), ServerSide(broker, pki, device_id) as server:
        async with AgentRuntime(settings, plugins=[plugin]) as agent:
            await agent.wait_connected()
            started = await server.wait_for(lambda m: isinstance(m, Event) and m.event == "agent.started")
            inventory = await server.wait_for(lambda m: isinstance(m, Inventory))
            status = await server.wait_for(lambda m: isinstance(m, Status) and m.online)
            batches = await server.wait_count(lambda m: isinstance(m, Telemetry), 2)
            await agent.drained()
            assert agent.outbox_depth() == 0
        # A late subscriber (a restarted server) still sees the retained snapshots.
        async with ServerSide(broker, pki, device_id) as late:
            retained = await late.wait_for(lambda m: isinstance(m, Status))
            await late.wait_for(lambda m: isinstance(m, Inventory))
            assert all(flag for _, flag in late.received)
    assert started.seq == 0
    assert inventory.equipment.model == "T-1"
    assert inventory.site == "Ward 3"
    assert inventory.system.hostname
    assert status.online
    assert {s.metric for s in batches[0].samples} >= {"fake.temperature.celsius", "agent.outbox.depth"}
    assert batches[1].seq > batches[0].seq
    assert not retained.online  # the graceful stop said goodbye
    assert retained.reason == "agent stopped"


async def test_agent_answers_ping_with_accepted_then_result(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "agent")
    settings = device_settings(tmp_path, pki, broker, device_id)
    async with (
        asyncio.timeout(20),
        ServerSide(broker, pki, device_id) as server,
        AgentRuntime(settings) as agent,
    ):
        await agent.wait_connected()
        command = server.sign("ping")
        await server.send(command)
        replies = await server.replies(command.id)
    assert [r.type for r in replies] == [ReplyType.ACCEPTED, ReplyType.RESULT]
    assert replies[1].ok
    assert replies[1].output == "pong"
    assert "device_time" in replies[1].data
    assert replies[0].seq < replies[1].seq


async def test_agent_rejects_every_bad_command_kind_reports_it_and_never_runs_it(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "agent")
    plugin = FakePlugin()
    settings = device_settings(
        tmp_path, pki, broker, device_id, policy={"allowed_actions": ["ping", "fake.touch"]}
    )
    async with (
        asyncio.timeout(30),
        ServerSide(broker, pki, device_id) as server,
        AgentRuntime(settings, plugins=[plugin]) as agent,
    ):
        await agent.wait_connected()
        good = server.sign("fake.touch")
        await server.send(good)
        await server.replies(good.id)
        assert len(plugin.calls) == 1

        forger = CommandSigner(Ed25519PrivateKey.generate())
        tampered = json.loads(encode(server.sign("fake.touch", args={"n": 1})))
        tampered["args"]["n"] = 2
        cases: list[tuple[str, str | None, bytes]] = []

        def add(reason: str, command_id: str | None, payload: bytes) -> None:
            cases.append((reason, command_id, payload))

        forged = forger.sign(
            device_id=device_id, action="fake.touch", issuer="mallory", ttl=timedelta(minutes=5)
        )
        add("unknown_key", forged.id, encode(forged))
        add("bad_signature", tampered["id"], json.dumps(tampered).encode())
        expired = server.sign("fake.touch", now=agent.clock.now() - timedelta(hours=1))
        add("expired", expired.id, encode(expired))
        future = server.sign("fake.touch", now=agent.clock.now() + timedelta(hours=1))
        add("not_yet_valid", future.id, encode(future))
        other = server.sign("fake.touch", device_id="someone-else")
        add("wrong_device", other.id, encode(other))
        not_allowed = server.sign("logs.tail", args={"path": "/etc/shadow"})
        add("not_allowed", not_allowed.id, encode(not_allowed))
        add("malformed", None, b"\x00 definitely not json")
        add("replayed", good.id, encode(good))

        for _, _, payload in cases:
            await server.send(payload)
        for reason, command_id, _ in cases:
            event = await server.wait_for(_rejected_event(command_id, reason))
            assert event.severity.value == "warning"
            if command_id is not None:
                replies = await server.replies(command_id, until="rejected")
                assert [r.reason for r in replies if r.type is ReplyType.REJECTED] == [reason]
        await agent.drained()
    assert len(plugin.calls) == 1  # none of the bad ones ran
    forged_event = next(m for m in server.messages(Event) if m.data.get("command_id") == forged.id)
    assert forged_event.data["issuer"] == "mallory"
    assert forged_event.data["action"] == "fake.touch"


async def test_agent_restart_publishes_queued_events_exactly_once_in_seq_order(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "agent")
    settings = device_settings(tmp_path, pki, broker, device_id)
    broker.stop()  # the device is cut off: everything must wait in the outbox
    async with asyncio.timeout(20), AgentRuntime(settings, plugins=[]) as offline:
        for i in range(50):
            offline.emit_event("fault.raised", code=f"Q{i}", severity=Severity.ERROR)
        assert offline.outbox_depth() >= 50
    broker.start()
    async with (
        asyncio.timeout(30),
        ServerSide(broker, pki, device_id) as server,
        AgentRuntime(settings, plugins=[]) as agent,
    ):
        await agent.wait_connected()
        queued = await server.wait_count(
            lambda m: isinstance(m, Event) and (m.code or "").startswith("Q"), 50
        )
        await agent.drained()
    codes = [m.code for m in server.messages(Event) if (m.code or "").startswith("Q")]
    assert codes == [f"Q{i}" for i in range(50)]  # each exactly once, in order
    seqs = [m.seq for m in queued]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 50
    all_seqs = [m.seq for m in server.messages() if not isinstance(m, Status)]
    assert len(all_seqs) == len(set(all_seqs))  # nothing published twice


async def test_agent_rejects_replay_after_restart(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "agent")
    plugin = FakePlugin()
    settings = device_settings(tmp_path, pki, broker, device_id, policy={"allowed_actions": ["fake.touch"]})
    async with asyncio.timeout(30), ServerSide(broker, pki, device_id) as server:
        command = server.sign("fake.touch")
        async with AgentRuntime(settings, plugins=[plugin]) as first:
            await first.wait_connected()
            await server.send(command)
            await server.replies(command.id)
        async with AgentRuntime(settings, plugins=[plugin]) as second:
            await second.wait_connected()
            await server.send(command)  # an attacker (or a confused broker) sends it again
            await server.wait_for(_rejected_event(command.id, "replayed"))
            await second.drained()
    assert len(plugin.calls) == 1


async def test_agent_receives_commands_queued_by_the_broker_while_offline(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "agent")
    settings = device_settings(tmp_path, pki, broker, device_id)
    async with asyncio.timeout(30), ServerSide(broker, pki, device_id) as server:
        async with AgentRuntime(settings) as first:
            await first.wait_connected()  # the persistent session now exists at the broker
        command = server.sign("ping")
        await server.send(command)  # the device is offline: the broker keeps it (QoS 1)
        async with AgentRuntime(settings) as second:
            await second.wait_connected()
            replies = await server.replies(command.id)
    assert [r.type for r in replies] == [ReplyType.ACCEPTED, ReplyType.RESULT]


async def test_agent_reconnects_after_broker_restart_and_delivers_what_queued_meanwhile(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "agent")
    settings = device_settings(tmp_path, pki, broker, device_id)
    async with asyncio.timeout(30), AgentRuntime(settings, plugins=[]) as agent:
        await agent.wait_connected()
        await agent.drained()
        broker.stop()
        await agent.link.wait_disconnected()
        agent.emit_event("fault.raised", code="DURING-OUTAGE")
        broker.start()
        async with ServerSide(broker, pki, device_id) as server:
            await agent.wait_connected()
            event = await server.wait_for(lambda m: isinstance(m, Event) and m.code == "DURING-OUTAGE")
            status = await server.wait_for(lambda m: isinstance(m, Status) and m.online and m.seq > event.seq)
    assert agent.link.connections == 2
    assert status.reason == "connected"


async def test_agent_with_revoked_certificate_stops_with_fatal_link_error(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "agent")
    revoke_device(pki, device_id)
    broker.reload()
    settings = device_settings(tmp_path, pki, broker, device_id)
    with pytest.raises(FatalLinkError, match="CERTIFICATE_REVOKED"):
        async with asyncio.timeout(30), AgentRuntime(settings, plugins=[]) as agent:
            await agent.wait_stopped()


async def test_agent_refuses_a_broker_certificate_from_another_ca(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    from certs import init_pki  # noqa: PLC0415

    device_id = unique_device(pki, "agent")
    other = init_pki(tmp_path / "other-pki")
    settings = device_settings(tmp_path, pki, broker, device_id)
    assert settings.tls is not None
    settings = settings.model_copy(update={"tls": settings.tls.model_copy(update={"ca_file": other.ca_cert})})
    with pytest.raises(FatalLinkError, match="does not verify against the fleet CA"):
        async with asyncio.timeout(30), AgentRuntime(settings, plugins=[]) as agent:
            await agent.wait_connected()
