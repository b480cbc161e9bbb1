"""The batched idempotent writer and the consumer, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from server.db.models import Device, Event, Message, QuarantinedMessage, TelemetrySample
from server.db.types import utcnow
from server.ingest import BatchWriter, Consumer, IngestStats, Quarantined
from server.ingest.consumer import Decoder
from server.ingest.refusals import RefusedDevices
from server.mqtt import InboundMessage
from server.settings import IngestSettings
from tests.server import factory as f

Sessions = async_sessionmaker[AsyncSession]


async def count(sessions: Sessions, model: type, **where: object) -> int:
    async with sessions() as session:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return (await session.scalar(stmt)) or 0


async def test_writer_stores_a_redelivered_message_once(sessions: Sessions) -> None:
    writer = BatchWriter(sessions)
    first = await writer.write([f.decoded(f.telemetry("dev-a", 1, 10.0))])
    again = await writer.write(
        [f.decoded(f.telemetry("dev-a", 1, 10.0)), f.decoded(f.telemetry("dev-a", 2, 11.0))]
    )
    assert (first.stored, first.duplicates) == (1, 0)
    assert (again.stored, again.duplicates) == (1, 1)
    assert await count(sessions, TelemetrySample, device_id="dev-a") == 2
    assert await count(sessions, Message, device_id="dev-a") == 2


async def test_writer_counts_duplicates_inside_one_batch(sessions: Sessions) -> None:
    outcome = await BatchWriter(sessions).write([f.decoded(f.telemetry("dev-b", 7))] * 3)
    assert (outcome.stored, outcome.duplicates) == (1, 2)
    assert await count(sessions, TelemetrySample, device_id="dev-b") == 1


async def test_writer_registers_device_and_applies_status_inventory_events(sessions: Sessions) -> None:
    writer = BatchWriter(sessions)
    await writer.write(
        [
            f.decoded(f.status("dev-c", 1, online=True, state="running")),
            f.decoded(f.inventory("dev-c", 2, model="LX-9", site="north")),
            f.decoded(f.event("dev-c", 3, "fault.raised", code="E42", severity="error", detail="jam")),
        ]
    )
    async with sessions() as session:
        device = await session.get(Device, "dev-c")
        assert device is not None
        assert device.online is True
        assert device.state == "running"
        assert (device.model, device.site, device.serial) == ("LX-9", "north", "SN-dev-c")
        assert device.inventory is not None
        assert device.inventory["equipment"]["vendor"] == "acme"
        assert device.last_seen is not None
        assert device.status_changed_at is not None
        ev = await session.scalar(select(Event).where(Event.device_id == "dev-c"))
        assert ev is not None
        assert (ev.type, ev.code, ev.severity, ev.detail) == (
            "fault.raised",
            "E42",
            "error",
            "jam",
        )
    changed_at = device.status_changed_at
    await writer.write([f.decoded(f.status("dev-c", 4, online=False, state=None))])
    async with sessions() as session:
        device = await session.get(Device, "dev-c")
        assert device is not None
        assert device.online is False
        assert device.state == "running"
        assert device.status_changed_at is not None
        assert device.status_changed_at > changed_at


class FakeSource:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[InboundMessage | None] = asyncio.Queue()
        self.acked: list[int] = []
        self.all_acked = asyncio.Event()
        self.expected = 0

    def ack(self, message: InboundMessage) -> None:
        self.acked.append(message.mid)
        if len(self.acked) >= self.expected:
            self.all_acked.set()


async def run_consumer(
    sessions: Sessions,
    messages: list[InboundMessage],
    *,
    writer: BatchWriter | None = None,
    decode: Decoder | None = None,
    on_settled: Callable[[list[tuple[str, int]]], None] | None = None,
    source: FakeSource | None = None,
    **settings: object,
) -> tuple[IngestStats, FakeSource]:
    source = source or FakeSource()
    source.expected = len(messages)
    stats = IngestStats()
    options: dict[str, Any] = {"decode": decode} if decode is not None else {}
    if on_settled is not None:
        options["on_settled"] = on_settled
    consumer = Consumer(
        source.queue,
        source.ack,
        writer or BatchWriter(sessions),
        IngestSettings(**settings),
        stats,
        **options,
    )
    for message in messages:
        source.queue.put_nowait(message)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(consumer.run())
        async with asyncio.timeout(10):
            await source.all_acked.wait()
        consumer.stop()
    assert task.done()
    return stats, source


@pytest.mark.parametrize(
    ("label", "topic", "payload", "reason"),
    [
        ("oversize", "fc/v1/d/dev-m/up/telemetry", b"{" + b" " * (256 * 1024) + b"}", "too_large"),
        ("not json", "fc/v1/d/dev-m/up/telemetry", b"\xff\xfe not json", "not_json"),
        (
            "wrong version",
            "fc/v1/d/dev-m/up/telemetry",
            json.dumps({"v": 2, "device_id": "dev-m"}).encode(),
            "bad_version",
        ),
        (
            "schema",
            "fc/v1/d/dev-m/up/telemetry",
            json.dumps({"v": 1, "device_id": "dev-m", "seq": -1}).encode(),
            "schema",
        ),
        ("device mismatch", "fc/v1/d/dev-m/up/telemetry", None, "device_mismatch"),
        ("bad topic", "fc/v1/d/dev-m/up/gossip", None, "bad_topic"),
        ("down topic", "fc/v1/d/dev-m/down/cmd", None, "schema"),
    ],
)
async def test_malformed_message_is_counted_acked_and_ingestion_goes_on(
    sessions: Sessions, label: str, topic: str, payload: bytes | None, reason: str
) -> None:
    if payload is None:  # a valid message from another device, or on a wrong topic
        payload = f.inbound(f.telemetry("dev-other" if reason == "device_mismatch" else "dev-m", 1)).payload
    bad = f.inbound(topic=topic, payload=payload)
    good = f.inbound(f.telemetry("dev-m", 2, 5.0))
    stats, source = await run_consumer(sessions, [bad, good])
    assert stats.malformed == {reason: 1}, label
    assert (stats.received, stats.stored) == (2, 1)
    assert source.acked == [bad.mid, good.mid]  # acked in arrival order, after the commit
    assert await count(sessions, TelemetrySample, device_id="dev-m") == 1


async def test_every_decoded_message_is_settled_for_the_receipts_after_its_ack(sessions: Sessions) -> None:
    """Stored, duplicate and refused messages are all final (sending them again cannot help):
    each is handed to the delivery receipts (server/ingest/receipts.py), once acknowledged. A
    message that could not be decoded has no seq to confirm."""
    await _register(sessions, "dev-gone", revoked_at=utcnow())
    messages = [f.inbound(f.telemetry("dev-s", seq)) for seq in (1, 2, 1)]
    messages += [f.inbound(f.event("dev-gone", 4)), f.inbound(topic="fc/v1/d/dev-s/up/event", payload=b"{")]
    settled: list[tuple[str, int]] = []
    acked_when_settled: list[int] = []
    source = FakeSource()

    def on_settled(keys: list[tuple[str, int]]) -> None:
        settled.extend(keys)
        acked_when_settled.append(len(source.acked))

    stats, _ = await run_consumer(sessions, messages, on_settled=on_settled, source=source)
    assert (stats.stored, stats.duplicates, stats.refused["revoked"], stats.malformed["not_json"]) == (
        2,
        1,
        1,
        1,
    )
    assert sorted(settled) == [("dev-gone", 4), ("dev-s", 1), ("dev-s", 1), ("dev-s", 2)]
    assert acked_when_settled == [len(messages)]  # one batch, handed over after all its acks


async def test_consumer_batches_and_counts_duplicates(sessions: Sessions) -> None:
    messages = [f.inbound(f.telemetry("dev-n", seq)) for seq in range(1, 51)]
    messages += [f.inbound(f.telemetry("dev-n", seq)) for seq in range(1, 11)]  # redeliveries
    stats, source = await run_consumer(sessions, messages, batch_size=20)
    assert (stats.received, stats.stored, stats.duplicates) == (60, 50, 10)
    assert stats.batches == 3
    assert len(source.acked) == 60
    assert await count(sessions, TelemetrySample, device_id="dev-n") == 50


# -- one message can never stop ingestion (issue 13) ----------------------------------------


def _raw_telemetry(device_id: str, seq: int) -> InboundMessage:
    """A telemetry message as the wire carries it, with any ``seq`` (the models would refuse)."""
    body = json.loads(f.inbound(f.telemetry(device_id, 1)).payload)
    body["seq"] = seq
    return f.inbound(topic=f"fc/v1/d/{device_id}/up/telemetry", payload=json.dumps(body).encode())


async def test_seq_beyond_64_bits_is_rejected_and_the_next_message_stored(sessions: Sessions) -> None:
    """The attack: ``seq = 2**63`` passed the schema and made the writer raise OverflowError,
    which stopped the consumer before it acknowledged anything."""
    poison = _raw_telemetry("dev-ovf", 2**63)
    good = f.inbound(f.telemetry("dev-ovf", 2, 4.0))
    stats, source = await run_consumer(sessions, [poison, good])
    assert stats.malformed == {"schema": 1}
    assert (stats.received, stats.stored) == (2, 1)
    assert source.acked == [poison.mid, good.mid]
    assert await count(sessions, TelemetrySample, device_id="dev-ovf") == 1


def lenient_decode(topic: str, payload: bytes) -> protocol.UpMessage:
    """The codec as it was before ``seq`` was bounded: any non-negative ``seq`` gets through. It
    stands for any message the schema lets pass and the writer then fails on."""
    body = json.loads(payload)
    seq = body["seq"]
    body["seq"] = 0
    return protocol.decode_uplink(topic, json.dumps(body).encode()).model_copy(update={"seq": seq})


async def quarantined(sessions: Sessions) -> list[QuarantinedMessage]:
    async with sessions() as session:
        return list((await session.scalars(select(QuarantinedMessage).order_by(QuarantinedMessage.id))).all())


async def test_message_the_writer_fails_on_is_quarantined_and_the_rest_stored(sessions: Sessions) -> None:
    """The poison message of issue 13 behind a schema that lets it through: SQLite raises
    OverflowError (not a database error), PostgreSQL a DataError. Either way only that message
    is set aside, kept as received, and everything is acknowledged."""
    first, poison, last = (
        f.inbound(f.telemetry("dev-q", 1)),
        _raw_telemetry("dev-q", 2**63),
        f.inbound(f.telemetry("dev-q", 3)),
    )
    stats, source = await run_consumer(sessions, [first, poison, last], decode=lenient_decode)
    assert (stats.received, stats.stored) == (3, 2)
    assert sum(stats.malformed.values()) == 1
    assert set(stats.malformed) <= {"db_rejected", "write_crash"}
    assert source.acked == [first.mid, poison.mid, last.mid]
    assert await count(sessions, TelemetrySample, device_id="dev-q") == 2
    [row] = await quarantined(sessions)
    assert stats.quarantined == {row.error: 1}
    assert (row.topic, row.device_id, row.seq, row.payload) == (poison.topic, "dev-q", None, poison.payload)
    assert row.reason


async def test_decoder_crash_is_counted_quarantined_and_ingestion_goes_on(sessions: Sessions) -> None:
    def crashing(topic: str, payload: bytes) -> protocol.UpMessage:
        if payload == b"crash me":
            raise RuntimeError("decoder bug")
        return protocol.decode_uplink(topic, payload)

    bad = f.inbound(topic="fc/v1/d/dev-dc/up/event", payload=b"crash me")
    good = f.inbound(f.telemetry("dev-dc", 1))
    stats, source = await run_consumer(sessions, [bad, good], decode=crashing)
    assert stats.malformed == {"decode_crash": 1}
    assert stats.quarantined == {"RuntimeError": 1}
    assert (stats.received, stats.stored) == (2, 1)
    assert source.acked == [bad.mid, good.mid]
    [row] = await quarantined(sessions)
    assert (row.device_id, row.seq, row.payload, row.error, row.reason) == (
        "dev-dc",
        None,
        b"crash me",
        "RuntimeError",
        "decoder bug",
    )


class QuarantineRefused(BatchWriter):
    """A database that refuses even the quarantine table (a fake at the writer seam)."""

    async def quarantine(self, items: Sequence[Quarantined]) -> None:
        raise ValueError("quarantine refused")


async def test_failing_quarantine_is_counted_and_still_acknowledged(sessions: Sessions) -> None:
    def crashing(topic: str, payload: bytes) -> protocol.UpMessage:
        raise KeyError(payload)

    bad = f.inbound(topic="fc/v1/d/dev-qf/up/event", payload=b"{}")
    stats, source = await run_consumer(sessions, [bad], writer=QuarantineRefused(sessions), decode=crashing)
    assert (stats.quarantine_failed, stats.malformed) == (1, {"decode_crash": 1})
    assert source.acked == [bad.mid]


# -- revoked or retired devices are refused (issue 13) --------------------------------------


async def _register(sessions: Sessions, device_id: str, **fields: object) -> None:
    async with sessions() as session:
        session.add(Device(id=device_id, first_seen=f.NOW, online=False, **fields))
        await session.commit()


async def test_messages_of_revoked_and_retired_devices_are_refused_and_counted(sessions: Sessions) -> None:
    await _register(sessions, "dev-rev", revoked_at=utcnow())
    await _register(sessions, "dev-ret", decommissioned_at=utcnow())
    await _register(sessions, "dev-both", revoked_at=utcnow(), decommissioned_at=utcnow())
    messages = [
        f.inbound(f.telemetry("dev-rev", 1)),
        f.inbound(f.status("dev-rev", 2, online=True)),
        f.inbound(f.event("dev-ret", 1)),
        f.inbound(f.telemetry("dev-both", 1)),
        f.inbound(f.telemetry("dev-fine", 1)),
        f.inbound(f.status("dev-fine", 2, online=True)),
    ]
    stats, source = await run_consumer(sessions, messages)
    assert stats.refused == {"revoked": 3, "retired": 1}
    assert (stats.received, stats.stored, stats.malformed) == (6, 2, {})
    assert len(source.acked) == 6
    for refused in ("dev-rev", "dev-ret", "dev-both"):
        assert await count(sessions, Message, device_id=refused) == 0
        assert await count(sessions, TelemetrySample, device_id=refused) == 0
        assert await count(sessions, Event, device_id=refused) == 0
    async with sessions() as session:
        revoked = await session.get(Device, "dev-rev")
        assert revoked is not None
        assert (revoked.online, revoked.last_seen) == (False, None)  # the status was not applied
    assert await count(sessions, TelemetrySample, device_id="dev-fine") == 1


async def test_refused_devices_are_reread_once_the_list_is_older_than_max_age() -> None:
    loads: list[dict[str, str]] = [{}, {"dev-a": "revoked"}]

    async def load() -> dict[str, str]:
        return loads.pop(0) if len(loads) > 1 else loads[0]

    fresh = RefusedDevices(load, max_age=0)
    assert await fresh.current() == {}
    assert await fresh.current() == {"dev-a": "revoked"}
    loads[:] = [{}, {"dev-a": "revoked"}]
    cached = RefusedDevices(load, max_age=3600)
    assert await cached.current() == {}
    assert await cached.current() == {}  # not re-read within max_age


def test_a_refused_device_is_logged_at_most_once_per_interval() -> None:
    async def load() -> dict[str, str]:
        return {}

    guard = RefusedDevices(load, log_interval=3600)
    assert [guard.should_log("a"), guard.should_log("a"), guard.should_log("b")] == [True, False, True]
    assert RefusedDevices(load, log_interval=0).should_log("a")
