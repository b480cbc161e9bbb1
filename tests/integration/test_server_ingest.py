"""The fleet server against a real Mosquitto (mutual TLS, fleet ACL): the test plays the device
with a plain aiomqtt client and its own certificate, publishing protocol messages it builds.

Runs on SQLite, and on PostgreSQL where cheap (skipped when PostgreSQL is not reachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import httpx
import pytest
from sqlalchemy import func, select

import protocol
from certs import PkiDir
from server.db import create_engine
from server.db.models import Device as DeviceRow
from server.db.models import Message, Role, TelemetrySample
from server.ingest.refusals import DEFAULT_MAX_AGE as REFUSED_MAX_AGE
from server.runtime import Runtime
from tests.support.broker import MosquittoBroker, tls_context, unique_device
from tests.support.server import V1, ServerProcess, bearer, connected_server, create_token, server_settings
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@contextlib.asynccontextmanager
async def device_client(
    broker: MosquittoBroker, pki: PkiDir, device_id: str
) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=device_id, tls_context=tls_context(pki, device_id)
    ) as client:
        yield client


class Device:
    """Builds numbered protocol messages for one device id."""

    def __init__(self, device_id: str) -> None:
        self.id = device_id
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def telemetry(self, value: float) -> tuple[str, bytes]:
        now = datetime.now(UTC)
        message = protocol.Telemetry(
            device_id=self.id,
            seq=self.next_seq(),
            ts=now,
            samples=[protocol.Sample(metric="system.cpu.percent", value=value, ts=now)],
        )
        return protocol.up_topic(self.id, protocol.UpKind.TELEMETRY), protocol.encode(message)

    def reply(self, command_id: str, type_: protocol.ReplyType, **fields: object) -> tuple[str, bytes]:
        message = protocol.Reply(
            device_id=self.id,
            seq=self.next_seq(),
            ts=datetime.now(UTC),
            command_id=command_id,
            type=type_,
            **fields,
        )
        return protocol.up_topic(self.id, protocol.UpKind.REPLY), protocol.encode(message)


@contextlib.asynccontextmanager
async def in_process_server(
    database: str, pki: PkiDir, broker: MosquittoBroker
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, dict[str, str]]]:
    settings = server_settings(database, pki=pki, broker=broker, command_sweep_interval=0.2)
    async with connected_server(settings) as (client, runtime):
        token = await create_token(runtime, f"tech-{uuid.uuid4().hex[:6]}", Role.TECHNICIAN)
        yield client, runtime, bearer(token)


async def test_telemetry_reaches_the_api(db_url: str, pki: PkiDir, broker: MosquittoBroker) -> None:
    device = Device(unique_device(pki, "srv-tel"))
    async with in_process_server(db_url, pki, broker) as (client, _runtime, auth):
        async with device_client(broker, pki, device.id) as mqtt:
            for value in (1.0, 2.0, 3.0):
                await mqtt.publish(*device.telemetry(value), qos=1)

        async def arrived() -> bool:
            response = await client.get(f"{V1}/devices/{device.id}/telemetry", headers=auth)
            return response.status_code == 200 and len(response.json()) == 3

        await eventually(arrived, what="3 samples")
        samples = (await client.get(f"{V1}/devices/{device.id}/telemetry", headers=auth)).json()
        assert sorted(s["value"] for s in samples) == [1.0, 2.0, 3.0]


async def test_malformed_payload_is_counted_and_the_next_valid_one_stored(
    db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device = Device(unique_device(pki, "srv-bad"))
    async with in_process_server(db_url, pki, broker) as (client, runtime, auth):
        async with device_client(broker, pki, device.id) as mqtt:
            topic, _ = device.telemetry(0)
            await mqtt.publish(topic, b"this is not json", qos=1)
            await mqtt.publish(*device.telemetry(9.5), qos=1)

        async def stored() -> bool:
            response = await client.get(f"{V1}/devices/{device.id}/telemetry", headers=auth)
            return response.status_code == 200 and len(response.json()) == 1

        await eventually(stored)
        assert runtime.stats.malformed["not_json"] == 1
        admin = bearer(await create_token(runtime, "ops-stats", Role.OPS))
        stats = (await client.get(f"{V1}/ingest/stats", headers=admin)).json()
        assert stats["malformed"] == {"not_json": 1}
        assert stats["stored"] == 1
        assert stats["mqtt_connected"] is True


async def test_command_round_trip_signed_and_succeeded(
    db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device = Device(unique_device(pki, "srv-cmd"))
    verifier = protocol.CommandVerifier(protocol.load_public_key(pki.signing_pub.read_bytes()), device.id)
    async with in_process_server(db_url, pki, broker) as (client, _runtime, auth):
        async with device_client(broker, pki, device.id) as mqtt:
            await mqtt.subscribe(protocol.command_topic(device.id), qos=1)
            await mqtt.publish(*device.telemetry(1.0), qos=1)  # the server learns the device

            async def known() -> bool:
                return (await client.get(f"{V1}/devices/{device.id}", headers=auth)).status_code == 200

            await eventually(known)

            async def play_device() -> protocol.Command:
                async for message in mqtt.messages:
                    assert isinstance(message.payload, bytes)
                    command = protocol.decode_command(message.payload)
                    verifier.verify(command)  # signature, device binding, validity
                    await mqtt.publish(*device.reply(command.id, protocol.ReplyType.ACCEPTED), qos=1)
                    await mqtt.publish(
                        *device.reply(command.id, protocol.ReplyType.RESULT, ok=True, output="pong"), qos=1
                    )
                    return command
                raise AssertionError("no command arrived")

            player = asyncio.create_task(play_device())
            response = await client.post(
                f"{V1}/devices/{device.id}/commands",
                json={"action": "diag.ping", "args": {"count": 1}, "timeout_s": 20, "wait": True},
                headers=auth,
            )
            command = await player
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == command.id
        assert (body["state"], body["ok"], body["output"]) == ("succeeded", True, "pong")
        assert [r["type"] for r in body["replies"]] == ["accepted", "result"]
        assert body["sent_at"] is not None
        assert body["accepted_at"] is not None


# -- the server goes away while the device keeps publishing ---------------------------------


def _count_rows(database: str, device_id: str) -> Callable[[], Awaitable[tuple[int, int]]]:
    async def count() -> tuple[int, int]:
        engine = create_engine(database)
        try:
            async with engine.connect() as conn:
                messages = await conn.scalar(
                    select(func.count()).select_from(Message).where(Message.device_id == device_id)
                )
                samples = await conn.scalar(
                    select(func.count())
                    .select_from(TelemetrySample)
                    .where(TelemetrySample.device_id == device_id)
                )
                return messages or 0, samples or 0
        finally:
            await engine.dispose()

    return count


@pytest.mark.slow
@pytest.mark.parametrize("how", ["graceful", "sigkill"])
async def test_server_down_while_device_publishes_stores_everything_exactly_once(
    db_url: str, pki: PkiDir, broker: MosquittoBroker, tmp_path: Path, how: str
) -> None:
    device = Device(unique_device(pki, "srv-kill"))
    total = 300
    settings = server_settings(
        db_url, pki=pki, broker=broker, client_id=f"fleetcare-it-{uuid.uuid4().hex[:8]}"
    )
    count = _count_rows(db_url, device.id)
    server = ServerProcess(settings, tmp_path)
    server.start()  # creates the persistent session and its subscription
    try:
        async with device_client(broker, pki, device.id) as mqtt:
            for i in range(total // 3):
                await mqtt.publish(*device.telemetry(i), qos=1)
            await eventually(lambda: _at_least(count, 1))  # ingest is running: now pull the plug
            if how == "sigkill":
                assert server.kill() == -9
            else:
                assert server.stop() in (0, -15)  # uvicorn re-raises SIGTERM after its shutdown
                assert "fleetcare server stopped" in server.log_tail(), server.log_tail()
            for i in range(total // 3, total):  # the broker queues these for the server's session
                await mqtt.publish(*device.telemetry(i), qos=1)
        server.start()

        async def all_stored() -> bool:
            return (await count())[0] >= total

        await eventually(all_stored, timeout=30)
        assert await count() == (total, total)  # each message once, each sample once
    finally:
        server.stop()
    assert "Traceback" not in server.log_tail(200), server.log_tail(200)


async def _at_least(count: Callable[[], Awaitable[tuple[int, int]]], n: int) -> bool:
    return (await count())[0] >= n


# -- one message cannot stop ingestion, across restarts (issue 13) ----------------------------


async def test_poison_seq_is_acknowledged_and_ingestion_survives_a_restart(
    db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    """The attack: a schema-valid telemetry with ``seq = 2**63`` stopped the consumer before it
    acknowledged anything, so the broker redelivered it after every restart. Now it is rejected
    and acknowledged; the valid message after it is stored, and after a restart of the server
    (same persistent session) nothing is redelivered and new traffic is stored."""
    device = Device(unique_device(pki, "srv-poison"))
    settings = server_settings(
        db_url, pki=pki, broker=broker, client_id=f"fleetcare-it-{uuid.uuid4().hex[:8]}"
    )
    count = _count_rows(db_url, device.id)
    topic, body = device.telemetry(0.0)
    poison = body.replace(b'"seq":1,', f'"seq":{2**63},'.encode())
    assert poison != body
    async with connected_server(settings) as (_client, runtime):
        async with device_client(broker, pki, device.id) as mqtt:
            await mqtt.publish(topic, poison, qos=1)
            await mqtt.publish(*device.telemetry(1.0), qos=1)
        await eventually(lambda: _at_least(count, 1), what="the valid message stored")
        await eventually(lambda: runtime.stats.received == 2, what="both messages taken")
        assert runtime.stats.malformed == {"schema": 1}
    async with connected_server(settings) as (_client, runtime):
        async with device_client(broker, pki, device.id) as mqtt:
            await mqtt.publish(*device.telemetry(2.0), qos=1)
        await eventually(lambda: _at_least(count, 2), what="traffic after the restart stored")
        assert runtime.stats.received == 1  # the poison message was acknowledged: not redelivered
        assert runtime.stats.malformed == {}
    assert await count() == (2, 2)


# -- revoked devices are refused by the server itself (issue 13) ------------------------------


async def test_revoked_device_is_refused_within_seconds_and_others_stored(
    db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    """The broker still lets the device publish (its ACL not reloaded yet, say): the server
    refuses what it sends once ``devices.revoked_at`` is set, and goes on storing the others."""
    revoked, other = Device(unique_device(pki, "srv-rev")), Device(unique_device(pki, "srv-ok"))
    count_revoked, count_other = _count_rows(db_url, revoked.id), _count_rows(db_url, other.id)
    async with in_process_server(db_url, pki, broker) as (_client, runtime, _auth):
        async with device_client(broker, pki, revoked.id) as mqtt, device_client(broker, pki, other.id) as ok:
            await mqtt.publish(*revoked.telemetry(1.0), qos=1)
            await eventually(lambda: _at_least(count_revoked, 1), what="stored before the revocation")
            async with runtime.sessions() as session:
                device = await session.get(DeviceRow, revoked.id)
                assert device is not None
                device.revoked_at = datetime.now(UTC)
                await session.commit()
            started = time.monotonic()

            async def refused() -> bool:
                await mqtt.publish(*revoked.telemetry(2.0), qos=1)
                return runtime.stats.refused["revoked"] > 0

            await eventually(refused, timeout=10, interval=0.1, what="the revoked device refused")
            took = time.monotonic() - started
            print(f"\nrevoked device refused {took:.2f}s after revoked_at was set")
            assert took < REFUSED_MAX_AGE + 2  # the refused list's age, plus publish and batch slack
            for value in range(5):
                await ok.publish(*other.telemetry(float(value)), qos=1)
            await eventually(lambda: _at_least(count_other, 5), what="the other device stored")
            await eventually(lambda: runtime.stats.received == revoked.seq + 5, what="all taken")
        stored_revoked = (await count_revoked())[0]
        assert stored_revoked + runtime.stats.refused["revoked"] == revoked.seq
        assert runtime.stats.refused["revoked"] >= 1
        assert await count_other() == (5, 5)
