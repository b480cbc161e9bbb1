"""A malformed-payload storm (issue 13): 10,000 bad messages of a fixed mix from one device
certificate, through the real Mosquitto (mutual TLS, the fleet ACL) into the server's ingest,
with valid messages among them and after them.

Every bad message must be rejected with exactly its reason, every valid one stored exactly once,
and ingestion must still be running at the end. Prints sent / acked / stored / duplicates / lost.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
import pytest
from sqlalchemy import func, select

import protocol
from certs import PkiDir
from server.db import create_engine
from server.db.models import Message, TelemetrySample
from tests.support.broker import MosquittoBroker, tls_context, unique_device
from tests.support.server import connected_server, server_settings
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

STORM = 10_000
VALID_EVERY = 50  # one valid message among every 50 bad ones, the rest after the storm
VALID_AFTER = 300
WINDOW = 64  # publishes in flight at once (each awaits its PUBACK)


@dataclass(frozen=True)
class Kind:
    """One kind of bad message: the reason ingest must count it under, and how to make it."""

    label: str
    reason: str
    count: int
    make: Callable[[str, int], tuple[str, bytes]]  # (device id, index) -> (topic, payload)


def _telemetry(device_id: str, number: int, **override: object) -> dict[str, object]:
    """A valid telemetry message numbered ``number``, as JSON, with fields overridden."""
    now = datetime.now(UTC)
    message = protocol.Telemetry(
        device_id=device_id,
        seq=number,
        ts=now,
        samples=[protocol.Sample(metric="storm.value", value=1.0, ts=now)],
    )
    body: dict[str, object] = json.loads(protocol.encode(message))
    body.update(override)
    return body


def _up(device_id: str, kind: protocol.UpKind = protocol.UpKind.TELEMETRY) -> str:
    return protocol.up_topic(device_id, kind)


def _event(device_id: str, seq: int, data: str) -> bytes:
    message = protocol.Event(device_id=device_id, seq=seq, ts=datetime.now(UTC), event="fault.raised")
    return protocol.encode(message).replace(b'"data":{}', f'"data":{data}'.encode())


KINDS = [
    Kind("garbage", "not_json", 1980, lambda d, i: (_up(d), b"not json %d" % i)),
    Kind("not UTF-8", "not_json", 1000, lambda d, i: (_up(d), b"\xff\xfe" + i.to_bytes(4, "big"))),
    Kind("not an object", "not_json", 500, lambda d, i: (_up(d), b"[%d]" % i)),
    Kind(
        "5000-digit integer", "not_json", 200, lambda d, i: (_up(d), b'{"v": 1, "seq": ' + b"9" * 5000 + b"}")
    ),
    Kind(
        "wrong version",
        "bad_version",
        1000,
        lambda d, i: (_up(d), json.dumps(_telemetry(d, i, v=2)).encode()),
    ),
    Kind(
        "seq 2**63",
        "schema",
        1500,
        lambda d, i: (_up(d), json.dumps(_telemetry(d, i, seq=2**63 + i)).encode()),
    ),
    Kind(
        "no samples", "schema", 1000, lambda d, i: (_up(d), json.dumps(_telemetry(d, i, samples=[])).encode())
    ),
    Kind(
        "NaN value",
        "schema",
        500,
        lambda d, i: (_up(d), json.dumps(_telemetry(d, i)).replace("1.0", "NaN").encode()),
    ),
    Kind(
        "10**400 in data",
        "schema",
        500,
        lambda d, i: (_up(d, protocol.UpKind.EVENT), _event(d, i, '{"x": 1' + "0" * 400 + "}")),
    ),
    Kind(
        "ts overflows in UTC",
        "schema",
        300,
        lambda d, i: (_up(d), json.dumps(_telemetry(d, i, ts="0001-01-01T00:00:00+01:00")).encode()),
    ),
    Kind(
        "other device's payload",
        "device_mismatch",
        1000,
        lambda d, i: (_up(d), json.dumps(_telemetry("someone-else", i)).encode()),
    ),
    Kind("unknown kind", "bad_topic", 500, lambda d, i: (f"fc/v1/d/{d}/up/gossip", b"{}")),
    Kind(
        "one byte over the limit",
        "too_large",
        20,
        lambda d, i: (_up(d), b" " * (protocol.MAX_PAYLOAD_BYTES + 1)),
    ),
]


def storm_messages(device_id: str) -> tuple[list[tuple[str, bytes]], int]:
    """The storm, kinds interleaved (round robin), a valid message every VALID_EVERY bad ones,
    then VALID_AFTER valid ones. Returns the messages and the number of valid ones."""
    queues = {kind.label: [kind.make(device_id, i) for i in range(kind.count)] for kind in KINDS}
    bad: list[tuple[str, bytes]] = []
    while any(queues.values()):
        for kind in KINDS:
            if queues[kind.label]:
                bad.append(queues[kind.label].pop())
    messages: list[tuple[str, bytes]] = []
    seq = 0
    for index, item in enumerate(bad, start=1):
        messages.append(item)
        if index % VALID_EVERY == 0:
            seq += 1
            messages.append((_up(device_id), json.dumps(_telemetry(device_id, seq)).encode()))
    for _ in range(VALID_AFTER):
        seq += 1
        messages.append((_up(device_id), json.dumps(_telemetry(device_id, seq)).encode()))
    return messages, seq


async def publish_all(client: aiomqtt.Client, messages: list[tuple[str, bytes]]) -> int:
    """QoS 1, WINDOW publishes in flight; returns how many the broker acknowledged."""
    acked = 0
    for start in range(0, len(messages), WINDOW):
        window = messages[start : start + WINDOW]
        await asyncio.gather(*(client.publish(topic, payload, qos=1) for topic, payload in window))
        acked += len(window)
    return acked


async def stored_rows(database: str, device_id: str) -> tuple[int, int]:
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


async def test_malformed_storm_is_rejected_by_reason_and_valid_traffic_all_stored(
    db_url: str, pki: PkiDir, broker: MosquittoBroker
) -> None:
    device_id = unique_device(pki, "storm")
    messages, valid = storm_messages(device_id)
    expected: Counter[str] = Counter()
    for kind in KINDS:
        expected[kind.reason] += kind.count
    assert sum(expected.values()) == STORM
    assert valid == math.floor(STORM / VALID_EVERY) + VALID_AFTER

    settings = server_settings(
        db_url, pki=pki, broker=broker, client_id=f"fleetcare-storm-{uuid.uuid4().hex[:8]}"
    )
    async with connected_server(settings) as (_client, runtime):
        started = time.monotonic()
        async with aiomqtt.Client(
            broker.host, broker.port, identifier=device_id, tls_context=tls_context(pki, device_id)
        ) as mqtt:
            acked = await publish_all(mqtt, messages)
        published = time.monotonic() - started
        stats = runtime.stats

        def settled() -> bool:  # every message taken and accounted for (counted after its commit)
            accounted = (
                stats.stored + stats.duplicates + sum(stats.malformed.values()) + sum(stats.refused.values())
            )
            return stats.received == accounted == len(messages)

        await eventually(settled, timeout=60, what=f"{len(messages)} messages settled")
        ingested = time.monotonic() - started
        stored, samples = await stored_rows(db_url, device_id)
        lost = valid - stored
        print(
            f"\nstorm: sent={len(messages)} acked={acked} received={stats.received} "
            f"stored={stored} duplicates={stats.duplicates} lost={lost} "
            f"rejected={sum(stats.malformed.values())} {dict(stats.malformed)} "
            f"published in {published:.1f}s, ingested in {ingested:.1f}s"
        )
        assert acked == len(messages)
        assert stats.received == len(messages)
        assert stats.malformed == expected
        assert (stored, samples, stats.stored) == (valid, valid, valid)
        assert (stats.duplicates, lost) == (0, 0)
        assert dict(stats.quarantined) == {}
        assert dict(stats.refused) == {}
