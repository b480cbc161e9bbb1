"""End to end, the agent's guard: bad commands are rejected by the device, never executed, and
audited by the server as ``command.rejected`` with the reason.

Forged, tampered, expired and mis-addressed commands are injected the way an attacker holding
the server's broker identity would: published straight to ``fc/v1/d/{id}/down/cmd`` (the
broker ACL lets that identity write there, so only the agent's own checks stand in the way).
A replay re-publishes the exact bytes of a command the device already ran — also after the
agent restarted on the same data dir. A command outside the device's policy is refused by the
server before signing and, signed anyway, by the device.

"Never executed": every such command names an action of the test plugin whose handler records
each call; after each rejection a good command is sent through the API and runs — the agent
handles commands in order, so had the bad one been run, its call would be recorded first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import AgentRuntime
from certs import PkiDir
from protocol import CommandSigner, Reply, ReplyType, encode
from tests.agent.support import ServerSide
from tests.support.broker import MosquittoBroker, unique_device
from tests.support.e2e import Fleet, agent_settings, fleet_server
from tests.support.equipment import FakePlugin
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def forged(wire: ServerSide) -> tuple[str, bytes]:
    """Signed by another key (its own key id): the agent does not know the key."""
    command = CommandSigner(Ed25519PrivateKey.generate()).sign(
        device_id=wire.device_id, action="e2e.record", issuer="mallory", ttl=timedelta(minutes=5)
    )
    return command.id, encode(command)


def forged_with_pinned_key_id(wire: ServerSide) -> tuple[str, bytes]:
    """Signed by another key but claiming the pinned key's id: the signature does not verify."""
    forger = CommandSigner(Ed25519PrivateKey.generate())
    forger.kid = wire.signer.kid
    command = forger.sign(
        device_id=wire.device_id, action="e2e.record", issuer="mallory", ttl=timedelta(minutes=5)
    )
    return command.id, encode(command)


def tampered(wire: ServerSide) -> tuple[str, bytes]:
    """Genuinely signed, then a field changed."""
    body = json.loads(encode(wire.sign("e2e.record", args={"copies": 1})))
    body["args"]["copies"] = 1000
    return body["id"], json.dumps(body).encode()


def expired(wire: ServerSide) -> tuple[str, bytes]:
    command = wire.sign("e2e.record", now=datetime.now(UTC) - timedelta(hours=1))  # valid 5 min
    return command.id, encode(command)


def misaddressed(wire: ServerSide) -> tuple[str, bytes]:
    """A valid signature, for device B, published to device A's topic."""
    command = wire.sign("e2e.record", device_id=f"{wire.device_id}-b")
    return command.id, encode(command)


INJECTED: dict[str, tuple[Callable[[ServerSide], tuple[str, bytes]], str, str]] = {
    # case: (build it, the agent's reason, the issuer the command claims)
    "forged": (forged, "unknown_key", "mallory"),
    "forged_with_pinned_key_id": (forged_with_pinned_key_id, "bad_signature", "mallory"),
    "tampered": (tampered, "bad_signature", "test-technician"),
    "expired": (expired, "expired", "test-technician"),
    "misaddressed": (misaddressed, "wrong_device", "test-technician"),
}


def equipment() -> FakePlugin:
    return FakePlugin("e2e", actions=["record", "forbidden"])


async def rejections(fleet: Fleet, device_id: str, command_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The ``command.rejected`` audit entries naming ``command_id``, once there are ``count``."""

    async def entries() -> list[dict[str, Any]] | None:
        found = await fleet.audit("command.rejected", device_id, command_id)
        return found if len(found) >= count else None

    return await eventually(entries, what=f"{count} command.rejected audit entries for {command_id}")


async def good_command_runs(fleet: Fleet, device_id: str) -> str:
    body = await fleet.command(device_id, "e2e.record", wait=True, timeout_s=20)
    assert body["state"] == "succeeded", body
    return str(body["id"])


@pytest.mark.parametrize("case", list(INJECTED))
async def test_e2e_injected_bad_command_is_rejected_never_run_and_audited(
    case: str, db_url: str, pki: PkiDir, broker: MosquittoBroker, tmp_path: Path
) -> None:
    make, reason, issuer = INJECTED[case]
    device_id = unique_device(pki, "e2e-sec")
    plugin = equipment()
    settings = agent_settings(tmp_path, pki, broker, device_id)
    async with (
        asyncio.timeout(45),
        fleet_server(db_url, pki, broker) as fleet,
        ServerSide(broker, pki, device_id) as wire,
        AgentRuntime(settings, plugins=[plugin]) as agent,
    ):
        await agent.wait_connected()
        await eventually(lambda: fleet.device(device_id), what="device registered")
        command_id, payload = make(wire)
        await wire.send(payload)
        [entry] = await rejections(fleet, device_id, command_id)
        replies = await wire.replies(command_id, until="rejected")
        events = await fleet.events(device_id, type="command.rejected")
        good = await good_command_runs(fleet, device_id)
        replies_after = [r for r in wire.messages(Reply) if r.command_id == command_id]

    assert (entry["actor"], entry["result"]) == (f"device:{device_id}", "rejected")
    assert entry["detail"]["reason"] == reason
    assert entry["detail"]["issuer"] == issuer
    assert [(r.type, r.reason) for r in replies] == [(ReplyType.REJECTED, reason)]
    assert replies_after == replies  # no accepted, no result: it never ran
    assert [e["data"]["reason"] for e in events["items"]] == [reason]
    assert plugin.calls_of(command_id) == []
    assert [call.command_id for call in plugin.calls] == [good]


async def test_e2e_command_outside_the_device_policy_is_refused_by_the_server_and_by_the_device(
    db_url: str, pki: PkiDir, broker: MosquittoBroker, tmp_path: Path
) -> None:
    """Two layers: the server never signs what the device's advertised policy forbids; a command
    that is signed anyway (a server with a stale catalogue, or one bypassing its own check) is
    still refused by the device, never run, and audited."""
    device_id = unique_device(pki, "e2e-pol")
    plugin = equipment()
    settings = agent_settings(tmp_path, pki, broker, device_id)
    async with (
        asyncio.timeout(45),
        fleet_server(db_url, pki, broker) as fleet,
        AgentRuntime(settings, plugins=[plugin]) as agent,
        ServerSide(broker, pki, device_id) as wire,
    ):
        await agent.wait_connected()
        assert "e2e.forbidden" in agent.actions  # offered by the equipment, refused by the owner

        async def catalogue() -> list[dict[str, Any]] | None:
            device = await fleet.device(device_id)
            entries = ((device or {}).get("inventory") or {}).get("agent", {}).get("catalogue")
            return entries or None

        policy = {entry["name"]: entry["policy"] for entry in await eventually(catalogue, what="catalogue")}
        assert policy["e2e.forbidden"] == "forbidden"
        refused = await fleet.client.post(
            f"/api/v1/devices/{device_id}/commands",
            json={"action": "e2e.forbidden", "wait": True},
            headers=fleet.tech_auth,
        )
        recorded = await fleet.get(f"/devices/{device_id}/commands")
        [refusal] = await fleet.audit("command.refused", device_id)

        signed_anyway = wire.sign("e2e.forbidden")
        await wire.send(encode(signed_anyway))
        [entry] = await rejections(fleet, device_id, signed_anyway.id)
        good = await good_command_runs(fleet, device_id)

    assert refused.status_code == 403, refused.text
    assert "policy forbids 'e2e.forbidden'" in refused.json()["error"]["message"]
    assert [c["action"] for c in recorded["items"]] == []  # refused before signing: no command at all
    assert (refusal["actor"], refusal["result"]) == (f"user:{fleet.technician}", "forbidden")
    assert refusal["detail"]["action"] == "e2e.forbidden"
    assert (entry["result"], entry["detail"]["reason"]) == ("rejected", "not_allowed")
    assert entry["detail"]["issuer"] == signed_anyway.issuer
    assert plugin.calls_of(signed_anyway.id) == []
    assert [call.command_id for call in plugin.calls] == [good]


async def test_e2e_replayed_command_is_rejected_also_after_an_agent_restart(
    db_url: str, pki: PkiDir, broker: MosquittoBroker, tmp_path: Path
) -> None:
    device_id = unique_device(pki, "e2e-rpl")
    plugin = equipment()  # one instance across both runtimes: its record spans the restart
    settings = agent_settings(tmp_path, pki, broker, device_id)
    async with (
        asyncio.timeout(50),
        fleet_server(db_url, pki, broker) as fleet,
        ServerSide(broker, pki, device_id) as wire,
    ):
        async with AgentRuntime(settings, plugins=[plugin]) as agent:
            await agent.wait_connected()
            await eventually(lambda: fleet.device(device_id), what="device registered")
            original = await good_command_runs(fleet, device_id)
            payload = await fleet.signed_payload(original)  # the exact bytes the server published
            await wire.send(payload)
            [first] = await rejections(fleet, device_id, original)
        async with AgentRuntime(settings, plugins=[plugin]) as restarted:  # same data dir
            await restarted.wait_connected()
            await wire.send(payload)
            entries = await rejections(fleet, device_id, original, count=2)
            sentinel = await good_command_runs(fleet, device_id)
        after = await fleet.get(f"/commands/{original}")

    assert first["detail"]["reason"] == "replayed"
    assert [e["detail"]["reason"] for e in entries] == ["replayed", "replayed"]
    assert len(plugin.calls_of(original)) == 1  # ran once, before the replays
    assert [call.command_id for call in plugin.calls] == [original, sentinel]
    assert (after["state"], after["ok"]) == ("succeeded", True)  # a replay cannot rewrite history
    replies = [(r["type"], r["payload"]["reason"]) for r in after["replies"]]
    assert replies == [("accepted", ""), ("result", ""), ("rejected", "replayed"), ("rejected", "replayed")]
