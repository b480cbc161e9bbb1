"""``fleetcare session`` against a real uvicorn server (SQLite): open, run with live output,
close, report; clear messages for refused requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from certs import PkiDir
from client.session_cli import app
from server.db.models import Device, Role
from server.db.types import utcnow
from server.ingest import BatchWriter
from tests.server import factory as f
from tests.support.databases import sqlite_url
from tests.support.server import create_token, running_server, server_settings


async def test_open_run_close_report_from_the_terminal(tmp_path: Path, pki: PkiDir) -> None:
    from server.db import run_migrations  # noqa: PLC0415

    url = sqlite_url(tmp_path / "cli.db")
    run_migrations(url)
    async with running_server(server_settings(url, pki=pki)) as (server, base):
        runtime = server.state.runtime
        async with runtime.sessions() as session:
            session.add(Device(id="cli-dev", first_seen=utcnow(), model="LX-9"))
            await session.commit()
        token = await create_token(runtime, "tina", Role.TECHNICIAN)
        ops = await create_token(runtime, "oscar", Role.OPS)
        runner = CliRunner()

        def cli(*args: str, tok: str = token) -> tuple[int, str, str]:
            result = runner.invoke(app, [*args, "--url", base, "--token", tok])
            return result.exit_code, result.stdout, result.stderr

        code, out, _err = await asyncio.to_thread(cli, "open", "cli-dev", "--reason", "jam", "--no-wait")
        assert code == 0
        session_id = out.strip()
        assert session_id.startswith("ses_")

        async def device_answers() -> None:
            async with asyncio.timeout(10):
                while True:
                    async with runtime.sessions() as session:
                        from sqlalchemy import select  # noqa: PLC0415

                        from server.db.models import Command  # noqa: PLC0415

                        command_id = await session.scalar(
                            select(Command.id).where(Command.action == "selftest")
                        )
                    if command_id:
                        break
                    await asyncio.sleep(0.05)
            replies = [
                f.reply("cli-dev", 1, command_id, "output", output="fuser ok\n", chunk=0),
                f.reply("cli-dev", 2, command_id, "result", ok=True, data={"fuser_c": 181}),
            ]
            outcome = await BatchWriter(runtime.sessions).write([f.decoded(r) for r in replies])
            runtime.commands.notify(outcome.commands)

        answering = asyncio.create_task(device_answers())
        code, out, err = await asyncio.to_thread(cli, "run", session_id, "selftest", "--arg", "deep=true")
        await answering
        assert code == 0, err
        assert "fuser ok" in out
        assert '"fuser_c": 181' in out
        assert "succeeded" in err
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
