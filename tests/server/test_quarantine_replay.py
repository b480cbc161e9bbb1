"""Replaying quarantined messages after the fix (server/ingest/quarantine_replay.py), on SQLite
and PostgreSQL, and ``fleetcare server quarantine`` in a subprocess."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db import create_engine, create_sessionmaker, run_migrations
from server.db.models import AuditEntry, Device, Message, QuarantinedMessage
from server.db.types import utcnow
from server.ingest import BatchWriter
from server.ingest.quarantine_replay import replay_quarantined
from server.ingest.writer import BatchOutcome, Decoded
from tests.server import factory as f
from tests.server.test_ingest import run_consumer
from tests.support.cli import fleetcare_server

Sessions = async_sessionmaker[AsyncSession]


class BuggyWriter(BatchWriter):
    """The server as it was before a fix: its writer crashes on the message with seq 2."""

    async def write(self, items: Sequence[Decoded]) -> BatchOutcome:
        if any(item.message.seq == 2 for item in items):
            raise RuntimeError("writer bug on seq 2")
        return await super().write(items)


async def rows(sessions: Sessions) -> list[QuarantinedMessage]:
    async with sessions() as session:
        return list(await session.scalars(select(QuarantinedMessage).order_by(QuarantinedMessage.id)))


async def stored(sessions: Sessions, device_id: str) -> list[int]:
    async with sessions() as session:
        return sorted(await session.scalars(select(Message.seq).where(Message.device_id == device_id)))


async def test_replay_after_the_fix_stores_the_message_and_empties_the_quarantine(sessions: Sessions) -> None:
    messages = [f.inbound(f.telemetry("dev-rp", seq)) for seq in (1, 2, 3)]
    stats, _ = await run_consumer(sessions, messages, writer=BuggyWriter(sessions))
    assert stats.malformed == {"write_crash": 1}
    [row] = await rows(sessions)
    assert await stored(sessions, "dev-rp") == [1, 3]

    results = await replay_quarantined(sessions, actor="test")
    assert [(r.id, r.outcome) for r in results] == [(row.id, "stored")]
    assert await stored(sessions, "dev-rp") == [1, 2, 3]
    assert await rows(sessions) == []
    async with sessions() as session:
        audited = await session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "ingest.quarantine_replayed")
        )
    assert audited == 1
    assert await replay_quarantined(sessions, actor="test") == []  # nothing left: safe to repeat


async def test_a_message_stored_meanwhile_replays_as_a_duplicate(sessions: Sessions) -> None:
    await run_consumer(sessions, [f.inbound(f.telemetry("dev-dup", 2))], writer=BuggyWriter(sessions))
    await BatchWriter(sessions).write(
        [Decoded(f.telemetry("dev-dup", 2), utcnow())]
    )  # redelivered later, fixed
    [result] = await replay_quarantined(sessions, actor="test")
    assert result.outcome == "duplicate"
    assert await stored(sessions, "dev-dup") == [2]
    assert await rows(sessions) == []


async def test_still_failing_messages_stay_with_the_new_reason(sessions: Sessions) -> None:
    async with sessions() as session:
        session.add(
            QuarantinedMessage(
                received_at=utcnow(),
                topic="fc/v1/d/dev-bad/up/event",
                device_id="dev-bad",
                payload=b"crash me",
                error="RuntimeError",
                reason="decoder bug",
            )
        )
        await session.commit()
    [result] = await replay_quarantined(sessions, actor="test")
    assert result.outcome == "malformed"
    assert not result.resolved
    [row] = await rows(sessions)
    assert row.reason == result.detail
    assert row.reason != "decoder bug"


async def test_messages_of_a_revoked_device_stay_refused(sessions: Sessions) -> None:
    await run_consumer(sessions, [f.inbound(f.telemetry("dev-rv", 2))], writer=BuggyWriter(sessions))
    async with sessions() as session:
        session.add(Device(id="dev-rv", revoked_at=utcnow()))
        await session.commit()
    [result] = await replay_quarantined(sessions, actor="test")
    assert result.outcome == "refused"
    assert len(await rows(sessions)) == 1
    assert await stored(sessions, "dev-rv") == []


def test_cli_lists_and_replays_and_exits_1_while_some_stay(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    run_migrations(url)

    async def seed() -> None:
        engine = create_engine(url)
        try:
            sessions = create_sessionmaker(engine)
            await run_consumer(
                sessions, [f.inbound(f.telemetry("dev-cli", s)) for s in (1, 2)], writer=BuggyWriter(sessions)
            )
            async with sessions() as session:
                session.add(
                    QuarantinedMessage(
                        received_at=utcnow(), topic="fc/v1/d/x/up/event", payload=b"{", error="E", reason="r"
                    )
                )
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(seed())
    listed = fleetcare_server(tmp_path, "quarantine", "list")
    assert listed.returncode == 0, listed.stderr
    assert "fc/v1/d/dev-cli/up/telemetry" in listed.stdout
    assert "2 quarantined message(s)" in listed.stderr
    replayed = fleetcare_server(tmp_path, "quarantine", "replay")
    assert replayed.returncode == 1, replayed.stderr
    assert "replayed 2: 1 stored, 1 still quarantined" in replayed.stderr
    assert "\tstored\t" in replayed.stdout
    assert "\tmalformed\t" in replayed.stdout
