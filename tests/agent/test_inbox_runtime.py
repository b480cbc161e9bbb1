"""The runtime finishes what its inbox holds from before a crash (no broker: plaintext to a
closed port, replies land in the outbox). Each test leaves the inbox as a process killed at one
point would have left it, then starts the agent on that data dir."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent import AgentRuntime
from agent.config import AgentSettings
from agent.inbox import Inbox, InboxState
from agent.replay import SqliteReplayCache
from agent.storage import database_path
from agent.stores import open_agent_database
from protocol import Command, CommandSigner, Reply, ReplyType, decode_uplink, encode
from tests.agent.support import FakePlugin, make_settings
from tests.support.waiting import eventually


def _past() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


def _settings(tmp_path: Path, server_key_file: Path) -> AgentSettings:
    return make_settings(
        tmp_path, server_key_file=server_key_file, policy={"allowed_actions": ["fake.touch"]}
    )


def _command(signer: CommandSigner, **kw: Any) -> Command:
    params: dict[str, Any] = {"device_id": "dev-1", "action": "fake.touch", "issuer": "alice"}
    params.update({"ttl": timedelta(minutes=5), **kw})
    return signer.sign(**params)


def _leave(settings: AgentSettings, command: Command, state: InboxState) -> None:
    """The inbox and replay cache as a crash in ``state`` leaves them."""
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    db = open_agent_database(data_dir)
    try:
        path = database_path(data_dir)
        inbox = Inbox(path, db=db)
        entry = inbox.keep(encode(command))
        assert entry is not None
        if state is InboxState.RECEIVED:
            return
        assert inbox.claim(entry, SqliteReplayCache(path, db=db)).remember(command.id, command.expires_at)
        if state is InboxState.STARTED:
            inbox.mark_started(entry.id)
    finally:
        db.close()


def _replies(runtime: AgentRuntime, command_id: str) -> list[Reply]:
    messages = [decode_uplink(e.topic, e.payload) for e in runtime.outbox.pending(10_000)]
    return [m for m in messages if isinstance(m, Reply) and m.command_id == command_id]


def _terminal(runtime: AgentRuntime, command_id: str) -> list[tuple[ReplyType, str]]:
    return [
        (r.type, r.reason)
        for r in _replies(runtime, command_id)
        if r.type in (ReplyType.RESULT, ReplyType.ERROR, ReplyType.REJECTED)
    ]


async def _settled(runtime: AgentRuntime, command_id: str) -> None:
    await eventually(lambda: _terminal(runtime, command_id), timeout=5, what="a terminal reply")
    await eventually(lambda: not runtime.inbox.unfinished(), timeout=5, what="the inbox row done")
    await asyncio.sleep(0.05)  # room for anything that would come twice


async def test_a_command_kept_but_not_inspected_runs_once_after_the_restart(
    tmp_path: Path, server_key_file: Path, signer: CommandSigner
) -> None:
    settings = _settings(tmp_path, server_key_file)
    command = _command(signer)
    _leave(settings, command, InboxState.RECEIVED)
    plugin = FakePlugin()
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        await _settled(runtime, command.id)
        terminal = _terminal(runtime, command.id)
    assert len(plugin.calls_of(command.id)) == 1
    assert terminal == [(ReplyType.RESULT, "")]


async def test_an_accepted_command_is_not_taken_for_a_replay_of_itself(
    tmp_path: Path, server_key_file: Path, signer: CommandSigner
) -> None:
    """Its id is in the replay cache (recorded by its own row): it still runs, once."""
    settings = _settings(tmp_path, server_key_file)
    command = _command(signer)
    _leave(settings, command, InboxState.ACCEPTED)
    plugin = FakePlugin()
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        await _settled(runtime, command.id)
        terminal = _terminal(runtime, command.id)
    assert terminal == [(ReplyType.RESULT, "")]
    assert len(plugin.calls_of(command.id)) == 1


async def test_a_started_command_is_answered_interrupted_and_not_run_again(
    tmp_path: Path, server_key_file: Path, signer: CommandSigner
) -> None:
    settings = _settings(tmp_path, server_key_file)
    command = _command(signer)
    _leave(settings, command, InboxState.STARTED)
    plugin = FakePlugin()
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        await _settled(runtime, command.id)
        terminal = _terminal(runtime, command.id)
    assert plugin.calls_of(command.id) == []
    assert terminal == [(ReplyType.ERROR, "Interrupted")]


async def test_a_command_that_expired_while_the_agent_was_down_is_answered_expired(
    tmp_path: Path, server_key_file: Path, signer: CommandSigner
) -> None:
    settings = _settings(tmp_path, server_key_file)
    received = _command(signer, ttl=timedelta(seconds=1), now=_past())
    _leave(settings, received, InboxState.RECEIVED)
    plugin = FakePlugin()
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        await _settled(runtime, received.id)
        terminal = _terminal(runtime, received.id)
    assert plugin.calls == []
    assert terminal == [(ReplyType.REJECTED, "expired")]


async def test_an_accepted_command_that_expired_meanwhile_ends_in_an_error_not_a_rejection(
    tmp_path: Path, server_key_file: Path, signer: CommandSigner
) -> None:
    """The server may have heard "accepted": its terminal reply must be a result or an error."""
    settings = _settings(tmp_path, server_key_file)
    command = _command(signer, ttl=timedelta(seconds=1), now=_past())
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True)
    db = open_agent_database(data_dir)
    try:  # accepted while it was valid: the claim does not look at the clock
        inbox = Inbox(database_path(data_dir), db=db)
        entry = inbox.keep(encode(command))
        assert entry is not None
        inbox.claim(entry, SqliteReplayCache(database_path(data_dir), db=db, now=_past)).remember(
            command.id, command.expires_at
        )
    finally:
        db.close()
    plugin = FakePlugin()
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        await _settled(runtime, command.id)
        terminal = _terminal(runtime, command.id)
    assert plugin.calls == []
    assert terminal == [(ReplyType.ERROR, "expired")]


async def test_a_replay_of_an_executed_command_is_still_rejected_as_a_replay(
    tmp_path: Path, server_key_file: Path, signer: CommandSigner
) -> None:
    """The inbox does not weaken the guard: the same bytes again (not a broker redelivery) run
    into the replay cache, also after a restart."""
    settings = _settings(tmp_path, server_key_file)
    command = _command(signer)
    plugin = FakePlugin()
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        runtime.link.incoming.put_nowait(encode(command))
        await _settled(runtime, command.id)
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        runtime.link.incoming.put_nowait(encode(command))
        await eventually(
            lambda: (ReplyType.REJECTED, "replayed") in _terminal(runtime, command.id),
            timeout=5,
            what="replayed",
        )
        assert runtime.inbox.unfinished() == []
    assert len(plugin.calls_of(command.id)) == 1


async def test_a_command_injected_while_running_goes_through_the_inbox(
    tmp_path: Path, server_key_file: Path, signer: CommandSigner
) -> None:
    settings = _settings(tmp_path, server_key_file)
    command = _command(signer)
    plugin = FakePlugin()
    async with asyncio.timeout(10), AgentRuntime(settings, plugins=[plugin]) as runtime:
        runtime.link.incoming.put_nowait(encode(command))
        await _settled(runtime, command.id)
        counts = runtime.inbox.counts()
    assert counts == {"done": 1}
