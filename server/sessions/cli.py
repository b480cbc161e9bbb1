"""Placeholder: ``fleetcare session`` (issue 4)."""

import typer

app = typer.Typer(help="Remote sessions from the terminal.")
