"""``fleetcare agent``: run the agent, check its configuration, look into its outbox.

Imports only the agent and protocol packages: works with just ``pip install 'fleetcare[agent]'``.
Exit status: 0 ok, 1 check-config found problems, 2 invalid configuration, 3 the broker refused
this device's identity (see reconnect.on_fatal), 4 another agent holds the data directory.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from agent.checks import check_settings
from agent.config import AgentSettings, load_settings
from agent.consent import DEFAULT_APPROVAL, ConsentRecord, ConsentStatus, ConsentStore, parse_duration
from agent.errors import AgentConfigError, AgentError, DataDirInUse, FatalLinkError, PluginError
from agent.outbox import read_stats
from agent.runtime import run_agent
from agent.storage import database_path

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Run and manage the device agent.")
consent_app = typer.Typer(
    no_args_is_help=True,
    help="The local operator's answer to a technician's remote session (approve or deny).",
)
app.add_typer(consent_app, name="consent")

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="Agent configuration (TOML).", dir_okay=False),
]


def _load(config: Path) -> AgentSettings:
    try:
        return load_settings(config)
    except AgentConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def run(
    config: ConfigOption,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the agent until SIGTERM or Ctrl-C."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        typer.echo(f"error: unknown log level {log_level!r}", err=True)
        raise typer.Exit(2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = _load(config)
    try:
        asyncio.run(run_agent(settings))
    except KeyboardInterrupt:
        pass
    except (AgentConfigError, PluginError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except FatalLinkError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from exc
    except DataDirInUse as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(4) from exc
    except AgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command("check-config")
def check_config(config: ConfigOption) -> None:
    """Validate the configuration and the files it names; print each problem with its fix."""
    settings = _load(config)
    problems = check_settings(settings)
    for problem in problems:
        typer.echo(str(problem))
    if any(not p.warning for p in problems):
        raise typer.Exit(1)
    typer.echo(f"ok: {config} is valid for device {settings.device_id}")


def _database(data_dir: Path, legacy_name: str) -> Path:
    """``data_dir/agent.sqlite3``; or, while an agent of an older version runs that has not yet
    moved its stores into it (it does on its next start), that version's own file."""
    path = database_path(data_dir)
    legacy = data_dir / legacy_name
    return legacy if not path.exists() and legacy.exists() else path


@app.command()
def outbox(config: ConfigOption) -> None:
    """Show the outbox: depth, oldest queued message, dropped telemetry, messages waiting for the
    server's receipt (safe while running)."""
    settings = _load(config)
    path = _database(Path(settings.data_dir), "outbox.sqlite3")
    try:
        stats = read_stats(path)
    except AgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if stats is None:
        typer.echo(f"no outbox yet at {path} (the agent has not run)")
        return
    typer.echo(f"outbox:            {path}")
    typer.echo(f"depth:             {stats.depth}")
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(stats.by_kind.items())) or "-"
    typer.echo(f"by kind:           {kinds}")
    if stats.oldest_seq is not None and stats.oldest_created_at is not None:
        typer.echo(
            f"oldest:            seq {stats.oldest_seq} ({stats.oldest_kind}) queued "
            f"{stats.oldest_created_at:%Y-%m-%d %H:%M:%S}Z"
        )
    typer.echo(f"next seq:          {stats.next_seq}")
    typer.echo(f"dropped telemetry: {stats.dropped_telemetry}")
    typer.echo(f"unconfirmed:       {stats.unconfirmed} (sent, waiting for the server's receipt)")
    typer.echo(f"dropped unconfirmed: {stats.dropped_unconfirmed}")
    receipt = f"{stats.last_receipt_at:%Y-%m-%d %H:%M:%S}Z" if stats.last_receipt_at else "never"
    typer.echo(f"last receipt:      {receipt}")


AsOption = Annotated[
    str | None,
    typer.Option("--as", help="Operator name recorded with the decision (default: the OS user)."),
]


def _consent_store(config: Path) -> ConsentStore:
    settings = _load(config)
    data_dir = Path(settings.data_dir)
    if not data_dir.is_dir():
        typer.echo(f"error: no data directory at {data_dir} (the agent has not run yet)", err=True)
        raise typer.Exit(1)
    try:
        # journal=None: keep whatever journal mode the agent chose (storage_journal).
        return ConsentStore(
            _database(data_dir, "consent.sqlite3"),
            now=lambda: datetime.now(UTC),
            max_approval=timedelta(minutes=settings.policy.max_consent_minutes),
            journal=None,
        )
    except AgentError as exc:
        typer.echo(f"error: {exc} (run as the agent's user, or root)", err=True)
        raise typer.Exit(1) from exc


def _operator(name: str | None) -> str:
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local operator"


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}Z"


def _describe(record: ConsentRecord, now: datetime) -> str:
    status = record.status(now)
    text = (
        f"{record.session_id}  {status.value:8}  technician {record.technician}  until {_when(record.until)}"
        f"{'  (all commands)' if record.all_commands else ''}\n    reason: {record.reason or '-'}"
    )
    if status in (ConsentStatus.APPROVED, ConsentStatus.EXPIRED):
        text += f"\n    approved by {record.decided_by}, expires {_when(record.expires_at)}"
    elif status is ConsentStatus.DENIED:
        text += f"\n    denied by {record.decided_by}: {record.deny_reason or '-'}"
    return text


@consent_app.command("list")
def consent_list(
    config: ConfigOption,
    show_all: Annotated[bool, typer.Option("--all", help="Decided sessions too, not only pending.")] = False,
) -> None:
    """Consent requests waiting for a decision (``--all``: every session)."""
    store = _consent_store(config)
    try:
        now = datetime.now(UTC)
        records = store.records() if show_all else store.pending()
    except AgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        store.close()
    if not records:
        typer.echo("no pending consent requests" if not show_all else "no consent requests")
        return
    for record in records:
        typer.echo(_describe(record, now))


@consent_app.command("approve")
def consent_approve(
    config: ConfigOption,
    session_id: Annotated[str, typer.Argument(help="The session to approve (see 'consent list').")],
    duration: Annotated[
        str, typer.Option("--for", help="How long the approval lasts, e.g. 30m, 2h (default 60m).")
    ] = f"{int(DEFAULT_APPROVAL.total_seconds() // 60)}m",
    operator: AsOption = None,
) -> None:
    """Approve a session: its commands may run until the approval expires."""
    try:
        ttl = parse_duration(duration)
    except ValueError as exc:
        typer.echo(f"error: --for: {exc}", err=True)
        raise typer.Exit(2) from exc
    store = _consent_store(config)
    try:
        record = store.approve(session_id, _operator(operator), ttl)
    except AgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        store.close()
    typer.echo(f"approved session {session_id} for {record.technician} until {_when(record.expires_at)}")


@consent_app.command("deny")
def consent_deny(
    config: ConfigOption,
    session_id: Annotated[str, typer.Argument(help="The session to deny (final).")],
    reason: Annotated[str, typer.Option("--reason", help="Told to the technician.")] = "",
    operator: AsOption = None,
) -> None:
    """Deny a session, for good: none of its commands will ever run."""
    store = _consent_store(config)
    try:
        store.deny(session_id, _operator(operator), reason)
    except AgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        store.close()
    typer.echo(f"denied session {session_id}")
