"""``fleetcare session`` against a real uvicorn server (SQLite): open, run with live output,
close, report; clear messages for refused requests. ``session run`` prints the device's text
output (stdout) and a status line (stderr), the result's data as JSON only with ``--json``, and
says where a returned file went."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select
from typer.testing import CliRunner

from certs import PkiDir
from client.session_cli import app
from server.db.models import Command, Device, Role
from server.db.types import utcnow
from server.ingest import BatchWriter
from server.runtime import Runtime
from tests.server import factory as f
from tests.support.databases import sqlite_url
from tests.support.server import create_token, running_server, server_settings

Cli = Callable[..., tuple[int, str, str]]


@asynccontextmanager
async def _terminal(tmp_path: Path, pki: PkiDir) -> AsyncIterator[tuple[Runtime, Cli, str]]:
    """A server with device ``cli-dev``, the CLI as technician tina, and tina's open session."""
    from server.db import run_migrations  # noqa: PLC0415

    url = sqlite_url(tmp_path / "cli.db")
    run_migrations(url)
    async with running_server(server_settings(url, pki=pki)) as (server, base):
        runtime = server.state.runtime
        async with runtime.sessions() as session:
            session.add(Device(id="cli-dev", first_seen=utcnow(), model="LX-9"))
            await session.commit()
        token = await create_token(runtime, "tina", Role.TECHNICIAN)
        runner = CliRunner()

        def cli(*args: str, tok: str = token) -> tuple[int, str, str]:
            result = runner.invoke(app, [*args, "--url", base, "--token", tok])
            return result.exit_code, result.stdout, result.stderr

        code, out, _err = await asyncio.to_thread(cli, "open", "cli-dev", "--reason", "jam", "--no-wait")
        assert code == 0
        session_id = out.strip()
        assert session_id.startswith("ses_")
        yield runtime, cli, session_id


_seq = itertools.count(1)


async def _device_answers(runtime: Runtime, action: str, *replies: tuple[str, dict[str, Any]]) -> None:
    """The device answers the newest unanswered ``action`` with ``replies`` (type, fields)."""
    async with asyncio.timeout(10):
        while True:
            async with runtime.sessions() as session:
                command_id = await session.scalar(
                    select(Command.id).where(Command.action == action, Command.finished_at.is_(None))
                )
            if command_id:
                break
            await asyncio.sleep(0.05)
    messages = [f.reply("cli-dev", next(_seq), command_id, kind, **fields) for kind, fields in replies]
    outcome = await BatchWriter(runtime.sessions).write([f.decoded(m) for m in messages])
    runtime.commands.notify(outcome.commands)


async def _run(
    runtime: Runtime, cli: Cli, args: list[str], *replies: tuple[str, dict[str, Any]]
) -> tuple[int, str, str]:
    answering = asyncio.create_task(_device_answers(runtime, args[1], *replies))
    result = await asyncio.to_thread(cli, "run", *args)
    await answering
    return result


SELFTEST = (
    ("output", {"output": "fuser ok\n", "chunk": 0}),
    ("result", {"ok": True, "data": {"fuser_c": 181}}),
)


async def test_open_run_close_report_from_the_terminal(tmp_path: Path, pki: PkiDir) -> None:
    async with _terminal(tmp_path, pki) as (runtime, cli, session_id):
        code, out, err = await _run(runtime, cli, [session_id, "selftest", "--arg", "deep=true"], *SELFTEST)
        assert code == 0, err
        assert out == "fuser ok\n"  # the device's text, not its data as JSON
        assert "selftest succeeded" in err
        ops = await create_token(runtime, "oscar", Role.OPS)
        code, _out, err = await asyncio.to_thread(cli, "open", "cli-dev", tok=ops)
        assert code == 1
        assert "error (403)" in err
        assert "hint:" in err
        code, _out, err = await asyncio.to_thread(
            cli, "close", session_id, "--outcome", "fuser fine", "--fixed"
        )
        assert code == 0, err
        report = tmp_path / "report.md"
        code, _out, err = await asyncio.to_thread(cli, "report", session_id, "--markdown", "-o", str(report))
        assert code == 0, err
        text = report.read_text()
        assert "`selftest` — succeeded" in text
        assert "fuser fine (fixed)" in text
        code, _out, err = await asyncio.to_thread(cli, "run", session_id, "selftest")
        assert code == 1
        assert "error (409)" in err


async def test_run_prints_text_with_a_status_line_and_json_only_when_asked(
    tmp_path: Path, pki: PkiDir
) -> None:
    async with _terminal(tmp_path, pki) as (runtime, cli, session_id):
        code, out, err = await _run(runtime, cli, [session_id, "selftest", "--json"], *SELFTEST)
        assert code == 0, err
        assert json.loads(out) == {"fuser_c": 181}  # for scripts: stdout is the result's data alone
        assert "selftest succeeded" in err

        report = "[printer] PASS\nfuser 181 °C\n\n[system] PASS\ndisk 41% used"
        data = {"plugins": {"printer": {"ok": True, "output": "fuser 181 °C\n"}}}
        code, out, err = await _run(
            runtime, cli, [session_id, "agent.info"], ("result", {"ok": True, "output": report, "data": data})
        )
        assert code == 0, err
        assert out == report + "\n"  # as the console's session page shows it: no JSON, no \n escapes
        assert "\\n" not in out
        assert "{" not in out
        status = err.strip().splitlines()[-1]
        assert re.fullmatch(r"agent\.info succeeded · \d+\.\d s \(command [\w-]+\)", status), status

        code, out, err = await _run(
            runtime,
            cli,
            [session_id, "service.restart", "--arg", "name=cupsd"],
            ("result", {"ok": False, "output": "cupsd did not come back\n", "data": {"exit_code": 3}}),
        )
        assert code == 1
        assert out == "cupsd did not come back\n"
        assert "service.restart failed · exit code 3 · " in err

        code, out, err = await _run(
            runtime,
            cli,
            [session_id, "logs.tail"],
            ("result", {"ok": True, "data": {"path": "/var/log/x", "lines": 0}}),
        )
        assert code == 0, err
        assert out == "path: /var/log/x\nlines: 0\n"  # no text at all: the data, as key: value lines


async def test_a_file_the_device_returns_is_saved_or_its_download_named(tmp_path: Path, pki: PkiDir) -> None:
    content = b"12:00 jam at tray 2\n12:01 cleared\n"
    digest = hashlib.sha256(content).hexdigest()
    data = {
        "path": "/var/log/printer.log",
        "size": len(content),
        "sha256": digest,
        "encoding": "base64",
        "chunks": 1,
    }
    replies = (
        ("output", {"output": base64.b64encode(content).decode(), "chunk": 0}),
        (
            "result",
            {"ok": True, "output": f"/var/log/printer.log: {len(content)} bytes in 1 chunks", "data": data},
        ),
    )
    saved = tmp_path / "printer.log"
    async with _terminal(tmp_path, pki) as (runtime, cli, session_id):
        args = [session_id, "file.fetch", "--arg", "path=/var/log/printer.log"]
        code, out, err = await _run(runtime, cli, [*args, "-o", str(saved)], *replies)
        assert code == 0, err
        assert out == ""  # the file's base64 never reaches the terminal
        assert saved.read_bytes() == content
        assert f"saved /var/log/printer.log, {len(content)} bytes to {saved}" in err
        assert "1 chunk received" in err

        code, out, err = await _run(runtime, cli, args, *replies)
        assert code == 0, err
        assert out == ""
        assert "the device returned /var/log/printer.log" in err
        assert "/commands/" in err
        assert "-o printer.log" in err

        code, _out, err = await asyncio.to_thread(cli, "run", session_id, "selftest", "-o", str(saved))
        assert code == 2
        assert "only file.fetch returns a file" in err
