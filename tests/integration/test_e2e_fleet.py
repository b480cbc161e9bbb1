"""End to end, the happy paths: the real agent runtime, the real server (API, ingest, commands)
and a real Mosquitto with mutual TLS, on SQLite and on PostgreSQL.

1. telemetry and the installation profile reach the API; the device shows online;
2. a technician's ``ping`` round-trips through the API and is audited;
3. malformed payloads sent with a device certificate are counted, and ingestion goes on.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from agent import AgentRuntime
from certs import PkiDir
from protocol import Sample, Telemetry, UpKind, encode, format_ts, up_topic
from tests.support.broker import MosquittoBroker, tls_context, unique_device
from tests.support.e2e import agent_settings, fleet_server
from tests.support.equipment import FakePlugin
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TEMPERATURE = "e2e.temperature.celsius"


def equipment(device_id: str) -> FakePlugin:
    return FakePlugin(
        "e2e", {TEMPERATURE: 21.5}, actions=["record", "forbidden"], model="E2E-1", serial=f"SN-{device_id}"
    )


async def test_e2e_telemetry_and_inventory_reach_the_api_and_the_device_is_online(
    db_url: str, pki: PkiDir, broker: MosquittoBroker, tmp_path: Path
) -> None:
    device_id = unique_device(pki, "e2e-tel")
    settings = agent_settings(tmp_path, pki, broker, device_id, site="Ward 7", collect_system_metrics=True)
    async with (
        asyncio.timeout(40),
        fleet_server(db_url, pki, broker) as fleet,
        AgentRuntime(settings, plugins=[equipment(device_id)]) as agent,
    ):
        await agent.wait_connected()
        temperatures = await eventually(
            lambda: fleet.telemetry(device_id, metric=TEMPERATURE), what="equipment telemetry stored"
        )
        cpu = await eventually(
            lambda: fleet.telemetry(device_id, metric="system.cpu.percent"), what="system telemetry stored"
        )

        async def listed_online() -> dict[str, object] | None:
            page = await fleet.get("/devices", q=device_id)
            return next((d for d in page["items"] if d["id"] == device_id and d["online"]), None)

        listed = await eventually(listed_online, what="device listed online")
        online_page = await fleet.get("/devices", online="true", q=device_id)
        detail = await fleet.device(device_id)

    assert {s["value"] for s in temperatures} == {21.5}
    assert 0.0 <= cpu[0]["value"] <= 100.0
    assert listed["online"] is True
    assert [d["id"] for d in online_page["items"]] == [device_id]
    assert (listed["model"], listed["serial"], listed["firmware"], listed["site"]) == (
        "E2E-1",
        f"SN-{device_id}",
        "1.0",
        "Ward 7",
    )
    assert listed["last_seen"] is not None
    assert detail is not None
    inventory = detail["inventory"]
    assert inventory["equipment"]["vendor"] == "Acme"
    assert inventory["system"]["hostname"]
    assert {"ping", "e2e.record", "e2e.forbidden"} <= set(inventory["agent"]["actions"])
    assert inventory["agent"]["plugins"] == ["e2e"]
    assert inventory["config"]["allowed_actions"] == ["ping", "e2e.record"]


async def test_e2e_ping_round_trips_through_the_api_and_is_audited(
    db_url: str, pki: PkiDir, broker: MosquittoBroker, tmp_path: Path
) -> None:
    device_id = unique_device(pki, "e2e-ping")
    settings = agent_settings(tmp_path, pki, broker, device_id)
    async with (
        asyncio.timeout(40),
        fleet_server(db_url, pki, broker) as fleet,
        AgentRuntime(settings, plugins=[equipment(device_id)]) as agent,
    ):
        await agent.wait_connected()
        await eventually(lambda: fleet.device(device_id), what="device registered")
        body = await fleet.command(device_id, "ping", wait=True)
        sent = await fleet.audit("command.sent", device_id, body["id"])
        finished = await fleet.audit("command.finished", device_id, body["id"])

    assert body["state"] == "succeeded", body
    assert (body["ok"], body["output"], body["issuer"]) == (True, "pong", fleet.technician)
    assert [r["type"] for r in body["replies"]] == ["accepted", "result"]
    assert "device_time" in body["data"]
    assert all(body[key] for key in ("sent_at", "accepted_at", "finished_at")), body
    assert len(sent) == 1
    assert sent[0]["actor"] == f"user:{fleet.technician}"
    assert sent[0]["detail"]["issuer"] == fleet.technician
    assert sent[0]["detail"]["action"] == "ping"
    assert [(e["actor"], e["result"]) for e in finished] == [(f"device:{device_id}", "succeeded")]


async def test_e2e_malformed_device_payloads_are_counted_and_the_agents_telemetry_still_stored(
    db_url: str, pki: PkiDir, broker: MosquittoBroker, tmp_path: Path
) -> None:
    device_id = unique_device(pki, "e2e-bad")
    settings = agent_settings(tmp_path, pki, broker, device_id, telemetry_interval=0.2)
    now = datetime.now(UTC)
    sample = {"metric": TEMPERATURE, "value": 1.0, "ts": format_ts(now)}
    header = {"device_id": device_id, "seq": 10**9, "ts": format_ts(now)}
    bad = {
        "not_json": b'{"v": 1, "device_id": ',
        "bad_version": json.dumps({"v": 2, **header, "samples": [sample]}).encode(),
        "schema": json.dumps({"v": 1, **header, "samples": []}).encode(),
        "device_mismatch": encode(
            Telemetry(device_id="someone-else", seq=10**9, ts=now, samples=[Sample.model_validate(sample)])
        ),
    }
    async with (
        asyncio.timeout(40),
        fleet_server(db_url, pki, broker) as fleet,
        AgentRuntime(settings, plugins=[equipment(device_id)]) as agent,
    ):
        await agent.wait_connected()
        await eventually(lambda: fleet.telemetry(device_id, metric=TEMPERATURE), what="first telemetry")
        # Another connection with the device's own certificate: the broker lets it write the
        # device's topics, and only those.
        async with aiomqtt.Client(
            broker.host, broker.port, identifier=f"{device_id}-raw", tls_context=tls_context(pki, device_id)
        ) as raw:
            for payload in bad.values():
                await raw.publish(up_topic(device_id, UpKind.TELEMETRY), payload, qos=1)

        async def counted() -> dict[str, object] | None:
            stats = await fleet.ingest_stats()
            return stats if stats["malformed_total"] >= len(bad) else None

        stats = await eventually(counted, what="malformed payloads counted")
        after = datetime.now(UTC)
        following = await eventually(
            lambda: fleet.telemetry(device_id, metric=TEMPERATURE, since=after.isoformat()),
            what="telemetry after the malformed payloads",
        )

    assert stats["malformed"] == dict.fromkeys(bad, 1)
    assert stats["mqtt_connected"] is True
    assert stats["stored"] > 0
    assert following[0]["value"] == 21.5
