"""The hash-chained audit log on SQLite and PostgreSQL: sealing numbers entries in id order,
and verify detects an altered, removed, re-numbered or un-chained entry (tampering done with
raw SQL, as an attacker with database access would)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.base import audit
from server.db.models import AuditEntry
from server.db.types import utcnow

Sessions = async_sessionmaker[AsyncSession]


async def add_entries(sessions: Sessions, count: int, *, start: int = 0) -> None:
    async with sessions() as session:
        for i in range(start, start + count):
            audit.record(
                session,
                actor=f"user:u{i % 3}",
                action="test.action",
                target=f"device:d{i}",
                detail={"i": i, "nested": {"x": [1, 2.5, "é"]}},
            )
        await session.commit()


async def chain(sessions: Sessions) -> list[tuple[int, int | None, str | None]]:
    async with sessions() as session:
        rows = await session.execute(
            select(AuditEntry.id, AuditEntry.chain_seq, AuditEntry.hash).order_by(AuditEntry.id)
        )
        return [(row.id, row.chain_seq, row.hash) for row in rows]


async def verify(sessions: Sessions) -> audit.VerifyReport:
    async with sessions() as session:
        return await audit.verify(session)


async def tamper(sessions: Sessions, sql: str, **params: object) -> None:
    async with sessions() as session:
        await session.execute(text(sql), params)
        await session.commit()


async def test_sealing_numbers_entries_in_id_order_and_later_entries_join_the_chain(
    sessions: Sessions,
) -> None:
    await add_entries(sessions, 5)
    assert all(seq is None and digest is None for _, seq, digest in await chain(sessions))
    async with sessions() as session:
        assert await audit.seal(session) == 5
    first = await chain(sessions)
    assert [seq for _, seq, _ in first] == [1, 2, 3, 4, 5]
    assert len({digest for *_, digest in first}) == 5

    await add_entries(sessions, 3, start=5)
    async with sessions() as session:
        assert await audit.seal(session) == 3
        assert await audit.seal(session) == 0  # nothing left
    second = await chain(sessions)
    assert second[:5] == first  # sealed entries are never re-hashed
    assert [seq for _, seq, _ in second] == list(range(1, 9))

    report = await verify(sessions)
    assert report.ok, report.summary()
    assert (report.entries, report.head_seq, report.head_hash) == (8, 8, second[-1][2])
    assert report.summary().startswith("audit log intact: 8 entries")


async def test_verify_seals_pending_entries_first(sessions: Sessions) -> None:
    await add_entries(sessions, 4)
    report = await verify(sessions)
    assert report.ok
    assert report.sealed_now == 4
    assert report.entries == 4


async def test_empty_log_is_intact(sessions: Sessions) -> None:
    report = await verify(sessions)
    assert report.ok
    assert report.entries == 0
    assert report.head_hash == audit.GENESIS


@pytest.mark.parametrize(
    ("column", "sql_value"),
    [
        ("detail", """'{"i": 999}'"""),
        ("actor", "'user:mallory'"),
        ("result", "'denied'"),
        ("target", "NULL"),
    ],
)
async def test_an_altered_entry_is_detected_at_its_sequence_number(
    sessions: Sessions, column: str, sql_value: str
) -> None:
    await add_entries(sessions, 6)
    assert (await verify(sessions)).ok
    entry_id = (await chain(sessions))[3][0]  # chain_seq 4
    await tamper(sessions, f"UPDATE audit_log SET {column} = {sql_value} WHERE id = :id", id=entry_id)
    report = await verify(sessions)
    assert not report.ok
    assert report.problem is not None
    assert (report.problem.kind, report.problem.chain_seq, report.problem.entry_id) == (
        "altered",
        4,
        entry_id,
    )
    assert report.entries == 3  # the entries before it are fine
    assert "entry #4" in report.summary()


async def test_an_altered_timestamp_is_detected(sessions: Sessions) -> None:
    await add_entries(sessions, 3)
    assert (await verify(sessions)).ok
    entry_id = (await chain(sessions))[1][0]
    async with sessions() as session:  # through the ORM: the same value type the column stores
        entry = await session.get(AuditEntry, entry_id)
        assert entry is not None
        entry.ts = entry.ts - timedelta(hours=1)
        await session.commit()
    report = await verify(sessions)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.chain_seq) == ("altered", 2)


async def test_a_removed_entry_leaves_a_gap(sessions: Sessions) -> None:
    await add_entries(sessions, 5)
    assert (await verify(sessions)).ok
    entry_id = (await chain(sessions))[2][0]  # chain_seq 3
    await tamper(sessions, "DELETE FROM audit_log WHERE id = :id", id=entry_id)
    report = await verify(sessions)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.chain_seq) == ("missing", 3)
    assert "#3 is missing" in report.problem.message


async def test_removing_the_first_entry_is_detected(sessions: Sessions) -> None:
    await add_entries(sessions, 2)
    assert (await verify(sessions)).ok
    await tamper(sessions, "DELETE FROM audit_log WHERE chain_seq = 1")
    report = await verify(sessions)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.chain_seq) == ("missing", 1)


async def test_swapped_sequence_numbers_are_detected(sessions: Sessions) -> None:
    await add_entries(sessions, 4)
    assert (await verify(sessions)).ok
    # swap #2 and #3 through a free number (chain_seq is unique)
    await tamper(sessions, "UPDATE audit_log SET chain_seq = 1000 WHERE chain_seq = 2")
    await tamper(sessions, "UPDATE audit_log SET chain_seq = 2 WHERE chain_seq = 3")
    await tamper(sessions, "UPDATE audit_log SET chain_seq = 3 WHERE chain_seq = 1000")
    report = await verify(sessions)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.chain_seq) == ("altered", 2)


async def test_an_entry_taken_out_of_the_chain_is_detected(sessions: Sessions) -> None:
    """Un-numbering the last entry (chain_seq NULL, hash kept) would otherwise look like an
    unsealed entry that the next seal re-chains with new content."""
    await add_entries(sessions, 3)
    assert (await verify(sessions)).ok
    last_id = (await chain(sessions))[-1][0]
    await tamper(sessions, "UPDATE audit_log SET chain_seq = NULL WHERE id = :id", id=last_id)
    async with sessions() as session:
        report = await audit._walk(session, 100, 0)  # without the seal that would re-chain it
    assert report.problem is not None
    assert report.problem.kind == "malformed"
    assert report.problem.entry_id == last_id


async def test_entries_recorded_with_a_change_are_sealed_with_their_transaction(sessions: Sessions) -> None:
    """record() joins the caller's transaction: a rolled-back change leaves no entry to seal."""
    async with sessions() as session:
        audit.record(session, actor="user:a", action="test.kept", ts=utcnow())
        await session.commit()
        audit.record(session, actor="user:a", action="test.rolled_back")
        await session.rollback()
    report = await verify(sessions)
    assert report.ok
    assert report.entries == 1


# --- what the chain alone cannot see (the anchors in test_audit_anchor.py do) ------------------


async def test_the_chain_alone_does_not_see_its_newest_entries_removed(sessions: Sessions) -> None:
    """Reproduces issue 13's audit finding: deleting the newest sealed rows leaves no gap, so
    the chain by itself reports a shorter, intact log."""
    await add_entries(sessions, 10)
    before = await verify(sessions)
    assert before.ok
    removed = 3
    await tamper(sessions, "DELETE FROM audit_log WHERE chain_seq > :keep", keep=before.head_seq - removed)
    after = await verify(sessions)
    assert after.ok, after.summary()  # nothing in the database says entries are missing
    assert after.head_seq == before.head_seq - removed


async def test_the_chain_alone_does_not_see_a_rebuilt_chain(sessions: Sessions) -> None:
    """An edited entry whose chain is re-sealed from that entry on (no key is needed: the
    hash is public) verifies as intact; only the head hash differs."""
    await add_entries(sessions, 6)
    before = await verify(sessions)
    assert before.ok
    await tamper(sessions, "UPDATE audit_log SET actor = 'user:mallory' WHERE chain_seq = 2")
    await tamper(sessions, "UPDATE audit_log SET chain_seq = NULL, hash = NULL WHERE chain_seq >= 2")
    after = await verify(sessions)  # verify seals the un-numbered rows again: a fresh chain
    assert after.ok, after.summary()
    assert after.head_seq == before.head_seq
    assert after.head_hash != before.head_hash
