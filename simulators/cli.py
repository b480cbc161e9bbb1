"""``fleetcare sim``: run simulated fleets against a broker.

fleetcare sim run --devices 200 --pki ./pki --broker localhost:8883 --interval 10
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from certs import PkiDir
from simulators.clock import ScaledClock
from simulators.fleet import SimulatedFleet

__all__ = ["app", "parse_broker", "stop_on_signals"]

app = typer.Typer(
    help="Simulated equipment fleets.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main() -> None:
    """Simulated equipment fleets: real agents driving simulated printers."""


def parse_broker(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8883`` for IPv6); the port defaults to 8883."""
    host, port = value, 8883
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise typer.BadParameter(f"{value!r}: missing ']'")
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise typer.BadParameter(f"{value!r}: expected [host]:port")
            port = _port(rest[1:], value)
    elif value.count(":") == 1:
        host, text = value.split(":")
        port = _port(text, value)
    if not host:
        raise typer.BadParameter(f"{value!r}: empty host")
    return host, port


def _port(text: str, value: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise typer.BadParameter(f"{value!r}: port must be 1-65535")
    return int(text)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by the first SIGINT/SIGTERM; a second one cancels the current task (no more
    waiting for a graceful stop). Handlers are removed on exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and task is not None:
            task.cancel()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(fleet: SimulatedFleet, every: float) -> None:
    tty = sys.stderr.isatty()
    with stop_on_signals() as stop:
        async with fleet:
            while not stop.is_set():
                line = fleet.progress().line()
                typer.echo(f"\r{line}   " if tty else line, err=True, nl=not tty)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)
            typer.echo("\nstopping the fleet…" if tty else "stopping the fleet…", err=True)
    typer.echo(fleet.progress().line(), err=True)


@app.command()
def run(
    *,
    devices: Annotated[
        int, typer.Option("--devices", "-n", min=1, help="Number of simulated printers.")
    ] = 10,
    pki_dir: Annotated[
        Path, typer.Option("--pki", help="Fleet PKI directory (fleetcare certs init).")
    ] = Path("pki"),
    broker: Annotated[
        str, typer.Option("--broker", help="Broker host:port (mutual TLS).")
    ] = "localhost:8883",
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Telemetry interval, seconds.")
    ] = 10.0,
    prefix: Annotated[str, typer.Option("--prefix", help="Device id prefix.")] = "sim-printer",
    data_root: Annotated[Path, typer.Option("--data", help="Where the agents keep their outboxes.")] = Path(
        "var/sim"
    ),
    speed: Annotated[
        float, typer.Option("--speed", min=0.001, help="Equipment clock speed (60: a minute per second).")
    ] = 1.0,
    jam_rate: Annotated[
        float, typer.Option("--jam-rate", min=0.0, help="Paper jams per printer per (simulated) hour.")
    ] = 0.1,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Base random seed (device i gets seed+i).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log the agents' activity.")] = False,
) -> None:
    """Run DEVICES simulated printers, each a real agent, until Ctrl-C."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    pki = PkiDir(pki_dir)
    for path in (pki.ca_cert, pki.ca_key, pki.signing_pub):
        if not path.exists():
            typer.echo(f"error: {path} not found: create the PKI first (fleetcare certs init)", err=True)
            raise typer.Exit(2)
    host, port = parse_broker(broker)
    fleet = SimulatedFleet(
        pki,
        host,
        port,
        devices,
        prefix=prefix,
        data_root=data_root,
        telemetry_interval=interval,
        printer_options={"jam_rate_per_hour": jam_rate},
        seed=seed,
        clock=ScaledClock(speed) if speed != 1.0 else None,
    )
    typer.echo(f"starting {devices} simulated printers against {host}:{port} (Ctrl-C to stop)", err=True)
    try:
        asyncio.run(_run(fleet, every=1.0))
    except asyncio.CancelledError:  # a second Ctrl-C
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
