"""A command is never lost between its PUBACK and its execution, nor run twice (issue 13).

A real agent process (this file run as ``python -m tests.integration.test_agent_inbox``: the
agent's own runtime and CLI settings, with one counting equipment plugin) against the real TLS
Mosquitto, killed with SIGKILL at a documented fault-injection point
(``FLEETCARE_AGENT_CRASH_POINT``, agent/crashpoints.py), then started again on the same data
dir without it. The plugin's action appends the command id to a file (fsync'd) before it
returns, so executions are counted across processes, whatever the replies say.

- ``before_ack``: stored in the inbox, not acknowledged: the broker redelivers it after the
  restart *and* the inbox replays it; it runs exactly once.
- ``after_receive``: acknowledged, not yet through the guard: before the inbox the broker had
  forgotten it and so had the agent (no reply, ever); now it runs exactly once after the restart.
- ``after_execute_before_reply``: the action ran, its result was not queued: the action is not
  run again; the one terminal reply is ``error(reason="Interrupted")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from certs import PkiDir
from protocol import Reply, ReplyType, Status
from tests.agent.support import ServerSide
from tests.support.broker import MosquittoBroker, unique_device

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[2]
ACTION = "count.mark"
TERMINAL = (ReplyType.RESULT, ReplyType.ERROR, ReplyType.REJECTED)


# -- the child process: a real agent with a plugin whose action leaves a durable mark ----------


class CountingPlugin:
    """``count.mark`` appends the command id to ``marks`` and fsyncs it, then returns."""

    name = "count"

    def __init__(self, marks: Path) -> None:
        self.marks = marks

    def equipment_info(self) -> Any:
        from protocol import EquipmentInfo  # noqa: PLC0415

        return EquipmentInfo(kind="test-rig", vendor="Acme", model="C-1", serial="SN-C", firmware="1.0")

    def read_metrics(self, now: datetime) -> Mapping[str, float]:
        return {}

    def actions(self) -> Sequence[Any]:
        from agent.plugin import ActionResult, ActionSpec  # noqa: PLC0415

        async def mark(args: Mapping[str, Any], ctx: Any) -> ActionResult:
            fd = os.open(self.marks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{ctx.command_id}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            return ActionResult(ok=True, output="marked")

        return [ActionSpec(ACTION, mark, "Append the command id to a file (a non-idempotent action).")]

    async def run(self, sink: Any) -> None:
        return None


def _child(config: Path, marks: Path) -> None:
    from agent.config import load_settings  # noqa: PLC0415
    from agent.runtime import run_agent  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    asyncio.run(run_agent(load_settings(config), plugins=[CountingPlugin(marks)]))


# -- the test side -----------------------------------------------------------------------------


def _write_config(tmp_path: Path, pki: PkiDir, broker: MosquittoBroker, device_id: str) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
device_id = "{device_id}"
server_key_file = "{pki.signing_pub}"
data_dir = "{tmp_path / "data"}"
telemetry_interval = 60
collect_system_metrics = false

[broker]
host = "{broker.host}"
port = {broker.port}
keepalive = 5

[tls]
ca_file = "{pki.ca_cert}"
cert_file = "{pki.device_cert(device_id)}"
key_file = "{pki.device_key(device_id)}"

[reconnect]
initial = 0.1
max = 1

[policy]
allowed_actions = ["ping", "{ACTION}"]
"""
    )
    return config


async def _spawn(config: Path, marks: Path, crash_point: str | None) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("FLEETCARE_AGENT_CRASH_POINT", None)
    if crash_point is not None:
        env["FLEETCARE_AGENT_CRASH_POINT"] = crash_point
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.test_agent_inbox",
        str(config),
        str(marks),
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def _stop(proc: asyncio.subprocess.Process) -> str:
    """Kill the process if it still runs; its stderr."""
    if proc.returncode is None:
        proc.kill()
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode(errors="replace")
    await proc.wait()
    return err


def _marks(marks: Path, command_id: str) -> int:
    if not marks.exists():
        return 0
    return marks.read_text().split().count(command_id)


def _terminal(server: ServerSide, command_id: str) -> list[Reply]:
    return [m for m in server.messages(Reply) if m.command_id == command_id and m.type in TERMINAL]


async def _crash_then_restart(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker, point: str
) -> tuple[ServerSide, str, Path, str]:
    """Send one ``count.mark`` to an agent that SIGKILLs itself at ``point``; start it again and
    wait for the command's terminal reply. Returns (server, command id, marks file, stderr)."""
    device_id = unique_device(pki, "inbox")
    config = _write_config(tmp_path, pki, broker, device_id)
    marks = tmp_path / "marks.txt"
    server = ServerSide(broker, pki, device_id)
    await server.__aenter__()
    try:
        proc = await _spawn(config, marks, point)
        try:
            await asyncio.wait_for(server.wait_for(lambda m: isinstance(m, Status) and m.online), 20)
            command = server.sign(ACTION)
            await server.send(command)
            assert await asyncio.wait_for(proc.wait(), 20) == -9, "the agent did not reach the crash point"
        finally:
            stderr = await _stop(proc)
        assert f"crash point {point} reached" in stderr, stderr[-3000:]

        proc = await _spawn(config, marks, None)
        try:
            try:
                await asyncio.wait_for(
                    server.wait_for(
                        lambda m: isinstance(m, Reply) and m.command_id == command.id and m.type in TERMINAL
                    ),
                    20,
                )
            except TimeoutError:
                pytest.fail(
                    f"killed at {point}, the command {command.id} got no final reply after the restart: "
                    f"lost (executions recorded: {_marks(marks, command.id)})"
                )
            # Whatever would come twice (a second run, a second reply) has had time to arrive.
            await asyncio.sleep(1.5)
        finally:
            stderr = await _stop(proc)
    except BaseException:
        await server.__aexit__(None, None, None)
        raise
    return server, command.id, marks, stderr


@pytest.mark.parametrize("point", ["after_receive", "before_ack"])
async def test_a_command_received_before_a_kill_runs_exactly_once_after_the_restart(
    point: str, tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    server, command_id, marks, stderr = await _crash_then_restart(tmp_path, pki, broker, point)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_exit(server)
        terminal = _terminal(server, command_id)
        assert [(r.type, r.ok) for r in terminal] == [(ReplyType.RESULT, True)], stderr[-3000:]
        assert _marks(marks, command_id) == 1, "the action ran more than once (or never)"
        if point == "before_ack":  # the broker did redeliver it, and the inbox absorbed it
            assert "a redelivered command is already in the inbox" in stderr, stderr[-3000:]


async def test_a_kill_after_the_action_ran_does_not_run_it_again(
    tmp_path: Path, pki: PkiDir, broker: MosquittoBroker
) -> None:
    server, command_id, marks, stderr = await _crash_then_restart(
        tmp_path, pki, broker, "after_execute_before_reply"
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_exit(server)
        terminal = _terminal(server, command_id)
        assert [(r.type, r.reason) for r in terminal] == [(ReplyType.ERROR, "Interrupted")], stderr[-3000:]
        assert _marks(marks, command_id) == 1, "a non-idempotent action ran twice"


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
