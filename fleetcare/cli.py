"""The ``fleetcare`` command.

Sub-commands load lazily: only the room that was asked for is imported, so a device with only
the ``agent`` extra installed gets a working ``fleetcare agent`` without the server's
dependencies, and ``fleetcare --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from fleetcare import __version__

# sub-command → (module holding a Typer ``app``, extra that provides its dependencies, help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "agent": ("agent.cli", "agent", "Run and manage the device agent."),
    "server": ("server.cli", "server", "Run and administer the fleet server."),
    "certs": ("certs.cli", "agent", "Fleet PKI: CA, device certificates, revocation, broker config."),
    "sim": ("simulators.cli", "sim", "Simulated equipment fleets."),
    "demo": ("server.demo", "all", "Run the whole system locally: broker, server, simulated fleet."),
    "kpi": ("server.kpi.cli", "server", "Downtime and service KPIs from the fleet database."),
    "session": ("client.session_cli", "client", "Remote sessions from the terminal: open, run, close."),
    "kb": ("client.kb_cli", "client", "The knowledge base: search, suggestions, articles."),
}

_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleetcare {__version__}")
        raise typer.Exit


def _placeholder(name: str, extra: str, help_text: str, error: ImportError | None) -> Any:
    def command() -> None:
        if error is not None:
            typer.echo(
                f"error: 'fleetcare {name}' needs the '{extra}' extra ({error}).\n"
                f"Install it with: pip install 'fleetcare[{extra}]'",
                err=True,
            )
            raise typer.Exit(2)

    command.__doc__ = help_text if error is None else f"{help_text} (unavailable: {extra} extra missing)"
    return command


def build_app(requested: str | None) -> typer.Typer:
    app = typer.Typer(
        name="fleetcare",
        help="fleetcare — remote maintenance for equipment at customer sites.",
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ) -> None:
        """fleetcare — remote maintenance for equipment at customer sites."""

    for name, (module_name, extra, help_text) in SUBCOMMANDS.items():
        if name == requested:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                app.command(name, context_settings=_PASS_THROUGH)(_placeholder(name, extra, help_text, exc))
                continue
            app.add_typer(module.app, name=name, help=help_text)
        else:
            app.command(name, context_settings=_PASS_THROUGH)(_placeholder(name, extra, help_text, None))
    return app


def main(argv: list[str] | None = None) -> Any:
    args = sys.argv[1:] if argv is None else argv
    requested = next((a for a in args if not a.startswith("-")), None)
    return build_app(requested)(args=args, prog_name="fleetcare")


if __name__ == "__main__":
    main()
