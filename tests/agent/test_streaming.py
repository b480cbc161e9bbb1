"""Streaming output (ctx.output), back-pressure, and cancelling a running command."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agent.actions import CHUNK_CHARS, ActionExecutor
from agent.actions.registry import RegisteredAction
from agent.plugin import ActionContext, ActionResult, ActionSpec
from protocol import Command, ReplyType

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Replies:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def __call__(self, command_id: str, type: ReplyType, **fields: Any) -> None:
        self.sent.append({"command_id": command_id, "type": type, **fields})
        self.changed.set()

    def of(self, command_id: str) -> list[dict[str, Any]]:
        return [r for r in self.sent if r["command_id"] == command_id]

    async def wait(self, predicate: Any) -> None:
        while not any(predicate(r) for r in self.sent):
            self.changed.clear()
            await self.changed.wait()


def command(action: str, command_id: str = "cmd-00000001", args: dict[str, Any] | None = None) -> Command:
    return Command(
        id=command_id,
        device_id="dev-1",
        action=action,
        args=args or {},
        issued_at=NOW,
        expires_at=NOW,
        issuer="alice",
        nonce="0" * 32,
        kid="0" * 16,
    )


async def test_streamed_chunks_are_sent_at_once_and_the_final_split_continues_the_numbering() -> None:
    replies = Replies()
    seen_while_running: list[int] = []

    async def handler(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        await ctx.output("a" * (CHUNK_CHARS + 10))  # two chunks
        seen_while_running.append(len(replies.sent))
        return ActionResult(ok=True, output="b" * (CHUNK_CHARS + 1), data={"x": 1})

    executor = ActionExecutor(device_id="dev-1", send=replies, now=lambda: NOW)
    await executor.execute(command("x.stream"), RegisteredAction(ActionSpec("x.stream", handler), "test"))
    outputs = [r for r in replies.sent if r["type"] is ReplyType.OUTPUT]
    assert seen_while_running == [3]  # accepted + 2 chunks before the handler returned
    assert [r["chunk"] for r in outputs] == [0, 1, 2, 3]
    assert all(len(r["output"]) <= CHUNK_CHARS for r in outputs)
    assert "".join(r["output"] for r in outputs) == "a" * (CHUNK_CHARS + 10) + "b" * (CHUNK_CHARS + 1)
    assert replies.sent[-1]["type"] is ReplyType.RESULT
    assert replies.sent[-1]["data"] == {"x": 1, "chunks": 4}


async def test_output_waits_for_room_in_the_outbox() -> None:
    replies = Replies()
    room = asyncio.Event()
    waits = 0

    async def wait_for_room() -> None:
        nonlocal waits
        waits += 1
        await room.wait()

    async def handler(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        await ctx.output("chunk")
        return ActionResult(ok=True)

    executor = ActionExecutor(device_id="dev-1", send=replies, now=lambda: NOW, room=wait_for_room)
    task = asyncio.create_task(
        executor.execute(command("x.stream"), RegisteredAction(ActionSpec("x.stream", handler), "test"))
    )
    await asyncio.sleep(0.05)
    assert [r["type"] for r in replies.sent] == [ReplyType.ACCEPTED]  # held back
    room.set()
    await asyncio.wait_for(task, 5)
    assert [r["type"] for r in replies.sent] == [ReplyType.ACCEPTED, ReplyType.OUTPUT, ReplyType.RESULT]
    assert waits == 1


async def test_cancel_stops_a_running_command_with_reason_cancelled() -> None:
    replies = Replies()
    finished = False

    async def forever(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        nonlocal finished
        await ctx.progress(0.1, "started")
        await asyncio.sleep(3600)
        finished = True
        return ActionResult(ok=True)

    executor = ActionExecutor(device_id="dev-1", send=replies, now=lambda: NOW, max_concurrent=1)
    spec = ActionSpec("x.forever", forever, timeout=3600)
    async with asyncio.timeout(5), asyncio.TaskGroup() as group:
        executor.spawn(group, command("x.forever"), RegisteredAction(spec, "test"), name="t1")
        # a second command waits for the only slot; cancelling it works too
        executor.spawn(group, command("x.forever", "cmd-00000002"), RegisteredAction(spec, "test"), name="t2")
        await replies.wait(lambda r: r["type"] is ReplyType.PROGRESS)
        assert executor.running() == ["cmd-00000001", "cmd-00000002"]
        assert executor.cancel("cmd-00000001", "bob")
        assert not executor.cancel("cmd-00000001", "bob")  # already being cancelled
        assert executor.cancel("cmd-00000002", "carol")
        assert not executor.cancel("cmd-unknown-1", "bob")
    assert not finished
    first, second = replies.of("cmd-00000001"), replies.of("cmd-00000002")
    assert (first[-1]["type"], first[-1]["reason"], first[-1]["output"]) == (
        ReplyType.ERROR,
        "Cancelled",
        "cancelled by bob",
    )
    assert (second[-1]["reason"], second[-1]["output"]) == ("Cancelled", "cancelled by carol")
    assert executor.running() == []


async def test_agent_shutdown_ends_a_running_command_with_agent_stopped() -> None:
    replies = Replies()

    async def forever(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        await asyncio.sleep(3600)
        return ActionResult(ok=True)

    executor = ActionExecutor(device_id="dev-1", send=replies, now=lambda: NOW)
    spec = ActionSpec("x.forever", forever, timeout=3600)
    task = asyncio.create_task(executor.execute(command("x.forever"), RegisteredAction(spec, "test")))
    await replies.wait(lambda r: r["type"] is ReplyType.ACCEPTED)
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("a shutdown cancel must propagate")
    assert replies.sent[-1]["reason"] == "AgentStopped"
