"""One database per agent (agent/storage.py): migration of the old three files, journal modes,
open files per agent, and the CLI working on the new file."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest

from agent import AgentRuntime
from agent.consent import ConsentState, ConsentStore
from agent.outbox import Outbox, read_stats
from agent.replay import SqliteReplayCache
from agent.storage import DATABASE_NAME, LEGACY_DATABASES, StorageError
from agent.stores import open_agent_database
from protocol import Event, UpKind
from tests.agent.support import make_settings

DEV = "dev-1"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LATER = datetime.now(UTC) + timedelta(days=30)  # replay ids and consent that do not expire in the test


def _event(seq: int) -> Event:
    return Event(device_id=DEV, seq=seq, ts=NOW, event="fault.raised", code=f"E{seq}")


def _write_legacy(data_dir: Path) -> None:
    """Files as an agent of the previous version leaves them when it is killed: three databases,
    commits still in their -wal files (no checkpoint), -shm beside them."""
    data_dir.mkdir(parents=True)
    live = data_dir.parent / "live"
    live.mkdir()
    outbox = Outbox(live / "outbox.sqlite3", DEV)
    replay = SqliteReplayCache(live / "replay.sqlite3", now=lambda: NOW)
    consent = ConsentStore(live / "consent.sqlite3", now=lambda: NOW)
    for store in (outbox, replay, consent):
        store._db.execute("PRAGMA wal_autocheckpoint=0")
    for _ in range(4):
        outbox.append(UpKind.EVENT, _event)
    outbox.ack(0)
    outbox.confirm([(0, 0)])  # acknowledged and confirmed: gone before the migration
    outbox.append_once("consent:S-1:1", UpKind.EVENT, _event)
    for _ in range(12):
        outbox.append(UpKind.EVENT, _event)
    assert replay.remember("cmd-a", LATER)
    assert replay.remember("cmd-b", LATER)
    consent.request(
        "S-1",
        technician="tina",
        reason="paper jam",
        until=LATER,
        all_commands=False,
        issuer="tina@acme",
        command_id="cmd-a",
    )
    consent.approve("S-1", "olga", timedelta(minutes=30))
    for path in live.iterdir():  # a copy taken while the connections are open = a killed agent
        shutil.copy2(path, data_dir / path.name)
    assert (data_dir / "outbox.sqlite3-wal").stat().st_size > 0
    for store in (outbox, replay, consent):
        store.close()


def test_migration_moves_every_row_and_retires_the_old_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_legacy(data)
    db = open_agent_database(data)
    try:
        outbox = Outbox(data / DATABASE_NAME, DEV, db=db)
        assert [e.seq for e in outbox.pending()] == list(range(1, 17))
        assert outbox.next_seq() == 17
        assert outbox.has_once("consent:S-1:1")
        replay = SqliteReplayCache(data / DATABASE_NAME, now=lambda: NOW, db=db)
        assert len(replay) == 2
        assert not replay.remember("cmd-a", LATER)  # still a replay after the move
        consent = ConsentStore(data / DATABASE_NAME, now=lambda: NOW, db=db)
        record = consent.get("S-1")
        assert record is not None
        assert record.state is ConsentState.APPROVED
        assert record.decided_by == "olga"
    finally:
        db.close()
    names = sorted(p.name for p in data.iterdir())
    assert DATABASE_NAME in names
    for legacy in LEGACY_DATABASES:
        assert legacy not in names
        assert f"{legacy}-wal" not in names
        assert f"{legacy}.migrated" in names


def test_migration_is_not_repeated_when_renaming_was_interrupted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_legacy(data)
    db = open_agent_database(data)
    outbox = Outbox(data / DATABASE_NAME, DEV, db=db)
    for entry in outbox.pending():
        outbox.ack(entry.seq)
    db.close()
    # As if the agent died after the copy committed but before the rename.
    shutil.copy2(data / "outbox.sqlite3.migrated", data / "outbox.sqlite3")
    db = open_agent_database(data)
    try:
        outbox = Outbox(data / DATABASE_NAME, DEV, db=db)
        assert outbox.pending() == []  # acknowledged messages do not come back
        assert outbox.next_seq() == 17
    finally:
        db.close()
    assert not (data / "outbox.sqlite3").exists()


def test_migration_of_an_unreadable_old_file_says_what_to_fix(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "replay.sqlite3").write_bytes(b"not a database, but not empty either" * 200)
    with pytest.raises(StorageError, match=r"replay\.sqlite3") as caught:
        open_agent_database(data)
    assert "move the file aside" in str(caught.value)
    assert (data / "replay.sqlite3").exists()  # nothing renamed: nothing was copied


@pytest.mark.parametrize("journal", ["wal", "rollback"])
def test_journal_mode_is_the_setting(tmp_path: Path, journal: Literal["wal", "rollback"]) -> None:
    db = open_agent_database(tmp_path, journal=journal)
    try:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        db.close()
    assert mode == {"wal": "wal", "rollback": "persist"}[journal]


async def test_runtime_starts_on_a_migrated_data_dir(tmp_path: Path, server_key_file: Path) -> None:
    settings = make_settings(tmp_path, server_key_file=server_key_file)
    _write_legacy(Path(settings.data_dir))
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[]) as runtime:
        queued = runtime.outbox.pending(1000)
        assert [e.seq for e in queued][:16] == list(range(1, 17))
        assert min(e.seq for e in queued[16:]) >= 17  # new messages continue the old sequence
        assert runtime.consent.get("S-1") is not None


def _files_under(root: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if target.startswith(str(root)):
            found.append(target)
    return found


@pytest.mark.parametrize(("journal", "files_per_agent"), [("rollback", 2), ("wal", 4)])
async def test_open_files_per_agent(
    tmp_path: Path, server_key_file: Path, journal: Literal["wal", "rollback"], files_per_agent: int
) -> None:
    """Designed: rollback = agent.lock + agent.sqlite3; wal adds -wal and -shm; plus one socket
    while connected (these agents are offline: a refused connection closes its socket)."""
    agents = 20
    root = tmp_path / "fleet"
    before = len(os.listdir("/proc/self/fd"))
    async with asyncio.timeout(20), AsyncExitStack() as stack:
        for i in range(agents):
            settings = make_settings(
                root, device_id=f"dev-{i:02d}", server_key_file=server_key_file, storage_journal=journal
            )
            runtime = await stack.enter_async_context(AgentRuntime(settings, plugins=[]))
            runtime.emit_event("fault.raised", code="E1")  # a write: the journal comes and goes
        await asyncio.sleep(0.1)
        files = _files_under(root)
        total = len(os.listdir("/proc/self/fd")) - before
    assert len(files) == files_per_agent * agents, sorted(files)[:8]
    assert total <= (files_per_agent + 1) * agents
    assert _files_under(root) == []  # all closed on exit


async def test_cli_decides_consent_and_reads_the_outbox_of_a_running_rollback_agent(
    tmp_path: Path, server_key_file: Path
) -> None:
    """Another process (the real CLI) against the one database, which it must not switch to WAL."""
    settings = make_settings(tmp_path, server_key_file=server_key_file, storage_journal="rollback")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'device_id = "{DEV}"\nserver_key_file = "{server_key_file}"\ndata_dir = "{settings.data_dir}"\n'
        'storage_journal = "rollback"\n[broker]\nhost = "127.0.0.1"\nallow_plaintext = true\n'
    )
    cli = [sys.executable, "-c", "from agent.cli import app; app()"]
    async with asyncio.timeout(30), AgentRuntime(settings, plugins=[]) as runtime:
        runtime.consent.request(
            "S-9",
            technician="tina",
            reason="toner",
            until=datetime.now(UTC) + timedelta(hours=1),
            all_commands=False,
            issuer="tina@acme",
            command_id="cmd-9",
        )
        approved, shown = await asyncio.gather(
            asyncio.to_thread(
                subprocess.run,
                [*cli, "consent", "approve", "S-9", "--as", "olga", "--config", str(config)],
                capture_output=True,
                text=True,
            ),
            asyncio.to_thread(
                subprocess.run, [*cli, "outbox", "--config", str(config)], capture_output=True, text=True
            ),
        )
        assert approved.returncode == 0, approved.stderr
        assert shown.returncode == 0, shown.stderr
        assert DATABASE_NAME in shown.stdout
        for _ in range(50):
            if any(
                e.kind is UpKind.EVENT and b"consent.granted" in e.payload
                for e in runtime.outbox.pending(100)
            ):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the agent did not pick up the CLI's approval")
    with sqlite3.connect(Path(settings.data_dir) / DATABASE_NAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    stats = read_stats(Path(settings.data_dir) / DATABASE_NAME)
    assert stats is not None
    assert stats.depth > 0


def test_outbox_of_a_database_the_consent_cli_created_first_is_empty(tmp_path: Path) -> None:
    ConsentStore(tmp_path / DATABASE_NAME, now=lambda: NOW, journal=None).close()
    assert read_stats(tmp_path / DATABASE_NAME) is None
