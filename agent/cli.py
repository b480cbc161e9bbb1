"""``fleetcare agent``: run the agent, check its configuration, look into its outbox.

Imports only the agent and protocol packages: works with just ``pip install 'fleetcare[agent]'``.
Exit status: 0 ok, 1 check-config found problems, 2 invalid configuration, 3 the broker refused
this device's identity (see reconnect.on_fatal), 4 another agent holds the data directory.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.checks import check_settings
from agent.config import AgentSettings, load_settings
from agent.errors import AgentConfigError, AgentError, DataDirInUse, FatalLinkError, PluginError
from agent.outbox import read_stats
from agent.runtime import run_agent

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Run and manage the device agent.")

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


@app.command()
def outbox(config: ConfigOption) -> None:
    """Show the outbox: depth, oldest queued message, dropped telemetry (safe while running)."""
    settings = _load(config)
    path = Path(settings.data_dir) / "outbox.sqlite3"
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
