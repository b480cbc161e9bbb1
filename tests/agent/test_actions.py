from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.actions import CHUNK_CHARS, ActionExecutor, ActionRegistry, LogAccess, builtin_actions, check_args
from agent.actions.registry import RegisteredAction
from agent.errors import ActionArgumentError, ActionConflict, ActionError
from agent.plugin import ActionContext, ActionResult, ActionSpec
from protocol import Command, ReplyType

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    allowed = tmp_path / "logs"
    allowed.mkdir()
    (allowed / "app.log").write_text("".join(f"line {i}\n" for i in range(1000)))
    (tmp_path / "secret.txt").write_text("top secret\n")
    return allowed


# -- logs.tail ---------------------------------------------------------------------------------


def test_logs_tail_returns_the_last_lines_of_an_allowed_file(logs_dir: Path) -> None:
    tail = LogAccess([logs_dir]).tail(str(logs_dir / "app.log"), 3)
    assert tail.text == "line 997\nline 998\nline 999"
    assert tail.lines == 3
    assert not tail.truncated


def test_logs_tail_bounds_lines_to_policy_maximum(logs_dir: Path) -> None:
    tail = LogAccess([logs_dir], max_lines=50).tail(str(logs_dir / "app.log"), 10_000)
    assert tail.lines == 50
    assert tail.truncated
    assert tail.text.splitlines()[-1] == "line 999"


def test_logs_tail_bounds_bytes_read_and_drops_the_cut_line(logs_dir: Path) -> None:
    tail = LogAccess([logs_dir], max_bytes=1024).tail(str(logs_dir / "app.log"), 500)
    assert len(tail.text.encode()) <= 1024
    assert all(line.startswith("line ") for line in tail.text.splitlines())
    assert tail.truncated


def test_logs_tail_refuses_dotdot_escape(logs_dir: Path) -> None:
    with pytest.raises(ActionArgumentError, match="outside the allowed log paths"):
        LogAccess([logs_dir]).tail(f"{logs_dir}/../secret.txt", 10)


def test_logs_tail_refuses_symlink_out_of_allowed_dir(logs_dir: Path) -> None:
    (logs_dir / "innocent.log").symlink_to(logs_dir.parent / "secret.txt")
    with pytest.raises(ActionArgumentError, match="outside the allowed log paths"):
        LogAccess([logs_dir]).tail(str(logs_dir / "innocent.log"), 10)


def test_logs_tail_refuses_symlinked_directory_out_of_allowed_dir(logs_dir: Path) -> None:
    (logs_dir / "sub").symlink_to(logs_dir.parent)
    with pytest.raises(ActionArgumentError, match="outside"):
        LogAccess([logs_dir]).tail(str(logs_dir / "sub" / "secret.txt"), 10)


def test_logs_tail_follows_symlink_that_stays_inside(logs_dir: Path) -> None:
    (logs_dir / "current.log").symlink_to(logs_dir / "app.log")
    assert LogAccess([logs_dir]).tail(str(logs_dir / "current.log"), 1).text == "line 999"


def test_logs_tail_refuses_sibling_with_common_prefix(tmp_path: Path, logs_dir: Path) -> None:
    sibling = tmp_path / "logs-private"
    sibling.mkdir()
    (sibling / "x.log").write_text("private\n")
    with pytest.raises(ActionArgumentError, match="outside"):
        LogAccess([logs_dir]).tail(str(sibling / "x.log"), 1)


def test_logs_tail_allows_an_exact_allowed_file_only(tmp_path: Path, logs_dir: Path) -> None:
    access = LogAccess([logs_dir / "app.log"])
    assert access.tail(str(logs_dir / "app.log"), 1).text == "line 999"
    (logs_dir / "other.log").write_text("x\n")
    with pytest.raises(ActionArgumentError, match="outside"):
        access.tail(str(logs_dir / "other.log"), 1)


def test_logs_tail_refuses_relative_paths_and_empty_policy(logs_dir: Path) -> None:
    with pytest.raises(ActionArgumentError, match="absolute"):
        LogAccess([logs_dir]).tail("app.log", 1)
    with pytest.raises(ActionArgumentError, match="no log paths"):
        LogAccess([]).tail(str(logs_dir / "app.log"), 1)


def test_logs_tail_refuses_non_regular_files(logs_dir: Path) -> None:
    fifo = logs_dir / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ActionArgumentError, match="not a regular file"):
        LogAccess([logs_dir]).tail(str(fifo), 1)
    with pytest.raises(ActionArgumentError, match="not a regular file"):
        LogAccess([logs_dir]).tail(str(logs_dir), 1)


def test_logs_tail_reports_missing_file_inside_allowed_dir(logs_dir: Path) -> None:
    with pytest.raises(ActionArgumentError, match="no such file"):
        LogAccess([logs_dir]).tail(str(logs_dir / "missing.log"), 1)


# -- registry and arguments -------------------------------------------------------------------


async def _noop(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
    return ActionResult(ok=True)


def test_registry_refuses_name_collision_naming_both_sources() -> None:
    registry = ActionRegistry()
    registry.add(ActionSpec("ping", _noop), source="built-in")
    with pytest.raises(ActionConflict, match=r"built-in.*plugin 'x'"):
        registry.add(ActionSpec("ping", _noop), source="plugin 'x'")


def test_registry_refuses_names_no_command_could_call() -> None:
    with pytest.raises(ActionError, match="dotted lower-case"):
        ActionRegistry().add(ActionSpec("Reboot Now", _noop), source="plugin 'x'")


def test_builtin_actions_are_the_four_read_only_diagnostics(tmp_path: Path) -> None:
    async def metrics() -> dict[str, float]:
        return {}

    specs = builtin_actions(metrics=metrics, info=dict, logs=LogAccess([]))
    assert sorted(s.name for s in specs) == ["agent.info", "logs.tail", "metrics.snapshot", "ping"]
    assert not any(s.disruptive for s in specs)


def test_check_args_names_each_problem() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "maximum": 5}, "flag": {"type": "boolean"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    assert check_args({"n": 3, "flag": True}, schema) == []
    problems = check_args({"n": True, "flag": 1, "x": 1}, schema)
    assert problems == [
        "n: expected integer, got bool",
        "flag: expected boolean, got int",
        "x: unknown argument (expected flag, n)",
    ]
    assert check_args({"n": 9}, schema) == ["n: must be <= 5"]
    assert check_args({}, schema) == ["n: required"]
    assert check_args({"anything": 1}, {}) == []


# -- executor ---------------------------------------------------------------------------------


class Replies:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, command_id: str, type: ReplyType, **fields: Any) -> None:
        self.sent.append({"command_id": command_id, "type": type, **fields})

    @property
    def types(self) -> list[ReplyType]:
        return [r["type"] for r in self.sent]


def _command(action: str = "x.run") -> Command:
    return Command(
        id="cmd-00000001",
        device_id="dev-1",
        action=action,
        issued_at=NOW,
        expires_at=NOW,
        issuer="alice",
        nonce="0" * 32,
        kid="0" * 16,
    )


async def _execute(spec: ActionSpec) -> Replies:
    replies = Replies()
    executor = ActionExecutor(device_id="dev-1", send=replies, now=lambda: NOW)
    async with asyncio.timeout(5):
        await executor.execute(_command(spec.name), RegisteredAction(spec, "test"))
    return replies


async def test_executor_sends_accepted_progress_then_result() -> None:
    async def handler(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        await ctx.progress(0.5, "half way")
        return ActionResult(ok=True, output="done", data={"n": 1})

    replies = await _execute(ActionSpec("x.run", handler))
    assert replies.types == [ReplyType.ACCEPTED, ReplyType.PROGRESS, ReplyType.RESULT]
    assert replies.sent[1]["progress"] == 0.5
    assert replies.sent[2] | {} == {
        "command_id": "cmd-00000001",
        "type": ReplyType.RESULT,
        "ok": True,
        "output": "done",
        "data": {"n": 1},
    }


async def test_executor_reports_handler_exception_as_error_with_class_name() -> None:
    async def handler(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        raise ActionArgumentError("path '/etc' is outside the allowed log paths")

    replies = await _execute(ActionSpec("x.run", handler))
    assert replies.types == [ReplyType.ACCEPTED, ReplyType.ERROR]
    assert replies.sent[1]["reason"] == "ActionArgumentError"
    assert "outside the allowed log paths" in replies.sent[1]["output"]


async def test_executor_enforces_the_action_timeout() -> None:
    async def handler(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        await asyncio.Event().wait()
        raise AssertionError

    replies = await _execute(ActionSpec("x.run", handler, timeout=0.05))
    assert replies.types == [ReplyType.ACCEPTED, ReplyType.ERROR]
    assert replies.sent[1]["reason"] == "TimeoutError"


async def test_executor_sends_large_output_as_numbered_chunks_then_result() -> None:
    big = "".join(f"{i:07d}\n" for i in range(5000))  # 40 000 characters

    async def handler(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        return ActionResult(ok=True, output=big, data={"lines": 5000})

    replies = await _execute(ActionSpec("x.run", handler))
    chunks = [r for r in replies.sent if r["type"] is ReplyType.OUTPUT]
    assert [c["chunk"] for c in chunks] == list(range(5))
    assert all(len(c["output"]) <= CHUNK_CHARS for c in chunks)
    assert "".join(c["output"] for c in chunks) == big
    assert replies.types[0] is ReplyType.ACCEPTED
    assert replies.types[-1] is ReplyType.RESULT
    assert replies.sent[-1]["output"] == ""


async def test_executor_rejects_a_handler_that_returns_the_wrong_type() -> None:
    async def handler(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        return "ok"  # type: ignore[return-value]

    replies = await _execute(ActionSpec("x.run", handler))
    assert replies.types == [ReplyType.ACCEPTED, ReplyType.ERROR]
    assert replies.sent[1]["reason"] == "TypeError"
