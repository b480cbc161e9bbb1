"""Ingest throughput: messages/s the server stores vs messages/s a plain subscriber receives.

Both sides drain the same backlog from the same Mosquitto (mutual TLS, the generated production
config) in the same run: N telemetry messages (5 samples each) are queued for a persistent
session while the consumer is offline, then the consumer connects and the clock runs from its
first message to its last. The figure is the ratio stored/s ÷ received/s.

The server runs with delivery receipts on and off (``ingest.receipts``, server/ingest/receipts.py:
one QoS 0 receipt per device per ``receipt_interval`` after each committed batch), alternating,
``--runs`` times each: the last column is the ratio of the medians, receipts on ÷ off.

    python -m benchmarks.ingest [--messages 20000] [--devices 20] [--db sqlite|postgres|both] [--runs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
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
    broker: MosquittoBroker,
    pki: PkiDir,
    devices: list[str],
    per_device: int,
    db_url: str,
    *,
    receipts: bool = True,
    seq0: int = 10**6,
) -> tuple[float, int, int]:
    """Stored msg/s, rows in ``messages``, receipts sent."""
    total = len(devices) * per_device
    client_id = f"bench-ingest-{int(time.time())}"
    ingest = {"batch_interval": 0.02, "receipts": receipts}
    settings = server_settings(db_url, pki=pki, broker=broker, client_id=client_id, ingest=ingest)
    async with api_client(settings) as (_client, runtime):  # creates the schema and the session
        while not runtime.mqtt_connected:
            await asyncio.sleep(0.01)
    await publish_backlog(broker, pki, devices, per_device, seq0=seq0)
    async with api_client(settings) as (_client, runtime), asyncio.timeout(600):
        stats = runtime.stats
        while stats.stored == 0:
            await asyncio.sleep(0.001)
        first, stored0 = time.perf_counter(), stats.stored
        while stats.stored + stats.duplicates < total:
            await asyncio.sleep(0.005)
        last = time.perf_counter()
        async with runtime.sessions() as session:
            rows = await session.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.seq >= seq0, Message.seq < seq0 + per_device)
            )
        await asyncio.sleep(2 * settings.ingest.receipt_interval)  # the last receipts
        sent = runtime.stats.receipts_sent
    await forget_session(broker, pki, client_id)
    return (total - stored0) / (last - first), int(rows or 0), sent


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
                with contextlib.ExitStack() as stack:
                    if backend == "sqlite":
                        url = sqlite_url(tmp / "bench.db")
                    else:
                        url = stack.enter_context(temporary_postgres_database("fc_bench"))
                    rates: dict[bool, list[float]] = {False: [], True: []}
                    for run in range(args.runs):
                        for receipts in (False, True):  # alternating: drift hits both alike
                            seq0 = 10**6 * (1 + 2 * run + receipts)
                            stored, count, sent = await ingest_rate(
                                broker, pki, devices, per_device, url, receipts=receipts, seq0=seq0
                            )
                            assert count == total, f"stored {count} rows, expected {total}"
                            assert (sent > 0) == receipts, f"receipts {receipts}: {sent} sent"
                            rates[receipts].append(stored)
                            print(
                                f"server ingest ({backend}, receipts {'on' if receipts else 'off'}): "
                                f"{stored:,.0f} msg/s stored, ratio {stored / plain:.2f}, {sent} receipts"
                            )
                off, on = statistics.median(rates[False]), statistics.median(rates[True])
                runs = lambda values: " / ".join(f"{v:,.0f}" for v in values)  # noqa: E731
                rows.append(
                    f"| {backend} | {total:,} | {plain:,.0f} | {runs(rates[False])} | {runs(rates[True])} "
                    f"| {off / plain:.2f} | {on / plain:.2f} | {on / off:.2f} |"
                )
        body = (
            f"Backlog of {total:,} telemetry messages (5 samples each) from {args.devices} devices, QoS 1, "
            "drained by each consumer from a persistent session.\n\n"
            "| database | messages | plain subscriber msg/s | stored msg/s, receipts off | stored msg/s, "
            "receipts on | ratio off | ratio on | on ÷ off (medians) |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows)
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
    parser.add_argument("--runs", type=int, default=2, help="runs with receipts off and on, alternating")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
