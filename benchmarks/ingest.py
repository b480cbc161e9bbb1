"""Ingest throughput: messages/s the server stores vs messages/s a plain subscriber receives.

Both sides drain the same backlog from the same Mosquitto (mutual TLS, the generated production
config) in the same run: N telemetry messages (5 samples each) are queued for a persistent
session while the consumer is offline, then the consumer connects and the clock runs from its
first message to its last. The figure is the ratio stored/s ÷ received/s.

    python -m benchmarks.ingest [--messages 20000] [--devices 20] [--db sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
from sqlalchemy import func, select

from benchmarks.results import record
from certs import SERVER_IDENTITY, PkiDir, init_pki, issue_device_cert
from protocol import Sample, Telemetry, UpKind, encode, server_subscription, up_topic
from server.db.models import Message
from tests.support.broker import MosquittoBroker, tls_context
from tests.support.databases import sqlite_url, temporary_postgres_database
from tests.support.server import api_client, server_settings

GROUP = "fleetcare"


def payloads(devices: list[str], per_device: int, seq0: int) -> Iterator[tuple[str, bytes]]:
    now = datetime.now(UTC)
    for i in range(per_device):
        for device in devices:
            samples = [Sample(metric=f"bench.metric_{k}", value=i + k, ts=now) for k in range(5)]
            message = Telemetry(device_id=device, seq=seq0 + i, ts=now, samples=samples)
            yield up_topic(device, UpKind.TELEMETRY), encode(message)


async def publish_backlog(
    broker: MosquittoBroker, pki: PkiDir, devices: list[str], per_device: int, seq0: int
) -> float:
    """Queue the backlog (QoS 1, each publish awaits its PUBACK); returns publish seconds."""
    by_device: dict[str, list[tuple[str, bytes]]] = {d: [] for d in devices}
    for topic, body in payloads(devices, per_device, seq0):
        by_device[topic.split("/")[3]].append((topic, body))

    async def one(device: str) -> None:
        async with aiomqtt.Client(
            broker.host, broker.port, identifier=f"bench-pub-{device}", tls_context=tls_context(pki, device)
        ) as client:
            for topic, body in by_device[device]:
                await client.publish(topic, body, qos=1)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for device in devices:
            tg.create_task(one(device), name=f"bench.publish[{device}]")
    return time.perf_counter() - start


@contextlib.asynccontextmanager
async def subscriber(broker: MosquittoBroker, pki: PkiDir, client_id: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=client_id,
        clean_session=False,
        tls_context=tls_context(pki, SERVER_IDENTITY),
    ) as client:
        yield client


async def forget_session(broker: MosquittoBroker, pki: PkiDir, client_id: str) -> None:
    """Drop a persistent session so the broker stops queueing for it."""
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=client_id,
        clean_session=True,
        tls_context=tls_context(pki, SERVER_IDENTITY),
    ):
        pass


async def baseline_rate(broker: MosquittoBroker, pki: PkiDir, devices: list[str], per_device: int) -> float:
    total = len(devices) * per_device
    async with subscriber(broker, pki, "bench-plain") as client:
        # its own share group: members of one group split the messages between them
        await client.subscribe(server_subscription("bench-plain"), qos=1)
    await publish_backlog(broker, pki, devices, per_device, seq0=0)
    received = 0
    first = last = 0.0
    async with subscriber(broker, pki, "bench-plain") as client, asyncio.timeout(300):
        async for _ in client.messages:
            received += 1
            last = time.perf_counter()
            if received == 1:
                first = last
            if received == total:
                break
    await forget_session(broker, pki, "bench-plain")
    return (total - 1) / (last - first)


async def ingest_rate(
    broker: MosquittoBroker, pki: PkiDir, devices: list[str], per_device: int, db_url: str
) -> tuple[float, int]:
    total = len(devices) * per_device
    client_id = f"bench-ingest-{int(time.time())}"
    settings = server_settings(db_url, pki=pki, broker=broker, client_id=client_id)
    async with api_client(settings) as (_client, runtime):  # creates the schema and the session
        while not runtime.mqtt_connected:
            await asyncio.sleep(0.01)
    await publish_backlog(broker, pki, devices, per_device, seq0=10**6)
    async with api_client(settings) as (_client, runtime), asyncio.timeout(600):
        stats = runtime.stats
        while stats.stored == 0:
            await asyncio.sleep(0.001)
        first, stored0 = time.perf_counter(), stats.stored
        while stats.stored + stats.duplicates < total:
            await asyncio.sleep(0.005)
        last = time.perf_counter()
        async with runtime.sessions() as session:
            rows = await session.scalar(select(func.count()).select_from(Message))
    await forget_session(broker, pki, client_id)
    return (total - stored0) / (last - first), int(rows or 0)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="fc-bench-") as tmp_name:
        tmp = Path(tmp_name)
        pki = init_pki(tmp / "pki")
        devices = [f"bench-{i:04d}" for i in range(args.devices)]
        for device in devices:
            issue_device_cert(pki, device)
        per_device = args.messages // args.devices
        total = per_device * args.devices
        rows: list[str] = []
        backends = ["sqlite", "postgres"] if args.db == "both" else [args.db]
        with MosquittoBroker(pki, tmp / "broker") as broker:
            for backend in backends:
                plain = await baseline_rate(broker, pki, devices, per_device)
                print(f"plain subscriber: {plain:,.0f} msg/s")
                if backend == "sqlite":
                    stored, count = await ingest_rate(
                        broker, pki, devices, per_device, sqlite_url(tmp / "bench.db")
                    )
                else:
                    with temporary_postgres_database("fc_bench") as pg_url:
                        stored, count = await ingest_rate(broker, pki, devices, per_device, pg_url)
                assert count == total, f"stored {count} rows, expected {total}"
                print(f"server ingest ({backend}): {stored:,.0f} msg/s stored, ratio {stored / plain:.2f}")
                rows.append(
                    f"| {backend} | {total:,} | {plain:,.0f} | {stored:,.0f} | {stored / plain:.2f} | {count:,} |"
                )
        body = (
            f"Backlog of {total:,} telemetry messages (5 samples each) from {args.devices} devices, QoS 1, "
            "drained by each consumer from a persistent session.\n\n"
            "| database | messages | plain subscriber msg/s | server stored msg/s | ratio | rows stored |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows)
        )
        print(body)
        record("benchmarks.ingest", "Ingest throughput vs plain subscriber", body)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
